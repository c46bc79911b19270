"""Event schemas: encoding and decoding (JSON via orjson), nothing else.

Each event carries ``schema_version``; topic names carry the version too
(``chat-turns.v1``). docs/events.md shows an example of each. Which turns a
verdict is judged on and which go to review is moderation's business
(:mod:`stream_app.routing`).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from guard.conversation import Role, Turn, parse_role, parse_turns, turns_to_rows
from guard.errors import InvalidInput
from guard.taxonomy import CategoryRef, PolicyRef

SCHEMA_VERSION = 1
#: Longest event id, conversation id, tenant or policy id (characters): ids are
#: written into every output record, so they are bounded like content is.
MAX_ID_CHARS = 256
#: Longest timestamp (characters): RFC 3339 with nanoseconds is 35.
MAX_TIMESTAMP_CHARS = 64
#: Most headers of an original record kept in its dead letter.
MAX_HEADERS = 64
#: Namespace of verdict ids: uuid5(namespace, event_id | model | policy | basis).
VERDICT_NAMESPACE = uuid.UUID("5b0c7c1e-5a8f-4d0b-9a55-6f1f0a9d2c10")


class EventError(InvalidInput):
    """A chat-turn event is malformed; the message is the dead-letter reason."""


class Decision(StrEnum):
    SAFE = "safe"
    UNSAFE = "unsafe"


class ReviewReason(StrEnum):
    UNSAFE = "unsafe"
    PARSE_ERROR = "parse_error"
    UNCERTAIN = "uncertain"
    FAIL_CLOSED = "fail_closed"
    #: A confident verdict sampled for review (``policy.audit_rate``), so that misses
    #: are found and the reviewed data reflects traffic.
    AUDIT = "audit"


class FailClosed(StrEnum):
    """Why an addressable turn got an unsafe verdict without being judged whole."""

    #: The content is over ``worker.max_content_bytes``.
    TOO_LARGE = "too_large"
    #: The context sent with the turn is over four times that.
    CONTEXT_TOO_LARGE = "context_too_large"
    #: The model refused the request (for example: it cannot fit the turn).
    REJECTED_BY_MODEL = "rejected_by_model"
    #: The model did not judge it within the deadline, repeatedly, while serving.
    TOO_SLOW = "too_slow"
    #: A streamed reply whose chunks stopped coming before its final one.
    STREAM_ABANDONED = "stream_abandoned"
    #: A streamed reply whose chunks contradict each other or exceed its bounds.
    STREAM_BROKEN = "stream_broken"


class Unjudgeable(EventError):
    """A turn with valid ids that cannot be judged whole: it gets a fail-closed
    verdict (:class:`FailClosed`), not a dead letter."""

    def __init__(self, message: str, reason: FailClosed, turn: ChatTurn) -> None:
        super().__init__(message)
        self.reason = reason
        self.turn = turn


def context_digest(context: Sequence[Turn]) -> str:
    """SHA-256 of the context a turn was judged in (roles and contents, in order)."""
    return hashlib.sha256(orjson.dumps(turns_to_rows(context))).hexdigest()


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(value: str) -> datetime:
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EventError(f"timestamp is not RFC 3339: {value[:40]!r}") from None
    if ts.tzinfo is None:
        raise EventError("timestamp needs a time zone (RFC 3339)")
    return ts


@dataclass(frozen=True, slots=True)
class ChatTurn:
    """A chat turn as applications produce it (input topic, key = conversation id)."""

    event_id: str
    conversation_id: str
    turn_index: int
    role: Role
    content: str
    timestamp: str
    tenant: str | None = None
    policy_id: str | None = None
    context: tuple[Turn, ...] | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema_version": self.schema_version,
            "event_id": self.event_id,
            "conversation_id": self.conversation_id,
            "turn_index": self.turn_index,
            "role": self.role.value,
            "content": self.content,
            "timestamp": self.timestamp,
        }
        if self.tenant is not None:
            d["tenant"] = self.tenant
        if self.policy_id is not None:
            d["policy_id"] = self.policy_id
        if self.context is not None:
            d["context"] = turns_to_rows(self.context)
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def _field(
    data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], required: bool = True
) -> Any:
    if name not in data or data[name] is None:
        if required:
            raise EventError(f"missing field {name!r}")
        return None
    value = data[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise EventError(f"field {name!r} must be {names}, got {type(value).__name__}")
    return value


def _id(data: Mapping[str, Any], name: str, required: bool = True) -> Any:
    value = _field(data, name, str, required)
    if value is not None and len(value) > MAX_ID_CHARS:
        raise EventError(
            f"field {name!r} is {len(value)} characters, over the limit of {MAX_ID_CHARS}"
        )
    return value


def _load_event(raw: bytes | None) -> dict[str, Any]:
    """The JSON object of an event of the supported schema version, or EventError."""
    if raw is None:
        raise EventError("empty message (no value)")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = "not valid UTF-8" if "utf-8" in str(exc).lower() else "not valid JSON"
        raise EventError(f"{reason}: {str(exc)[:120]}") from None
    if not isinstance(data, dict):
        raise EventError("event must be a JSON object")
    version = _field(data, "schema_version", int)
    if version != SCHEMA_VERSION:
        raise EventError(f"unsupported schema_version {version} (supported: {SCHEMA_VERSION})")
    return data


def decode_chat_turn(raw: bytes | None, max_content_bytes: int) -> ChatTurn:
    """Validate and decode a chat-turn event; :class:`EventError` says why not
    (:class:`Unjudgeable`, with the decoded turn, when only its size is wrong)."""
    data = _load_event(raw)
    event_id = _id(data, "event_id")
    conversation_id = _id(data, "conversation_id")
    if not event_id.strip() or not conversation_id.strip():
        raise EventError("event_id and conversation_id must not be empty")
    turn_index = _field(data, "turn_index", int)
    if turn_index < 0:
        raise EventError("turn_index must be >= 0")
    role = _checked(parse_role, _field(data, "role", str), "field 'role'")
    content = _field(data, "content", str)
    if not content.strip():
        raise EventError("content is empty")
    timestamp = _field(data, "timestamp", str)
    if len(timestamp) > MAX_TIMESTAMP_CHARS:
        raise EventError(f"timestamp is {len(timestamp)} characters, over {MAX_TIMESTAMP_CHARS}")
    parse_rfc3339(timestamp)
    context_raw = _field(data, "context", list, required=False)
    context = None if context_raw is None else _checked(parse_turns, context_raw, "context")
    turn = ChatTurn(
        event_id=event_id,
        conversation_id=conversation_id,
        turn_index=turn_index,
        role=role,
        content=content,
        timestamp=timestamp,
        tenant=_id(data, "tenant", required=False),
        policy_id=_id(data, "policy_id", required=False),
        context=context,
    )
    size = len(content.encode("utf-8"))
    if size > max_content_bytes:
        raise Unjudgeable(
            f"content is {size} bytes, over the limit of {max_content_bytes}",
            FailClosed.TOO_LARGE,
            turn,
        )
    if context is not None:
        total = size + sum(len(t.content.encode("utf-8")) for t in context)
        if total > max_content_bytes * 4:
            raise Unjudgeable(
                f"context is {total} bytes, over the limit of {max_content_bytes * 4}",
                FailClosed.CONTEXT_TOO_LARGE,
                turn,
            )
    return turn


@dataclass(frozen=True, slots=True)
class ReplyChunk:
    """One piece of an agent reply streamed while it is generated (reply-chunks topic,
    key = stream id, so that a stream's chunks stay in one partition, in order).

    ``stream_id`` names the reply (and is the event id of its final verdict);
    ``chunk_index`` counts from 0; ``delta`` is the text the chunk appends; the chunk
    with ``final`` true is the last one (its delta may be empty). ``context`` (the turns
    before the reply, at least the user's) rides on chunk 0; ``conversation_id``,
    ``tenant`` and ``policy_id`` must be the same on every chunk of a stream."""

    stream_id: str
    conversation_id: str
    chunk_index: int
    delta: str
    final: bool
    timestamp: str
    tenant: str | None = None
    policy_id: str | None = None
    context: tuple[Turn, ...] | None = None
    turn_index: int | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "schema_version": self.schema_version,
            "stream_id": self.stream_id,
            "conversation_id": self.conversation_id,
            "chunk_index": self.chunk_index,
            "delta": self.delta,
            "final": self.final,
            "timestamp": self.timestamp,
        }
        for name in ("tenant", "policy_id", "turn_index"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        if self.context is not None:
            d["context"] = turns_to_rows(self.context)
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def decode_reply_chunk(raw: bytes | None, max_delta_bytes: int) -> ReplyChunk:
    """Validate and decode a reply-chunk event; :class:`EventError` says why not."""
    data = _load_event(raw)
    stream_id = _id(data, "stream_id")
    conversation_id = _id(data, "conversation_id")
    if not stream_id.strip() or not conversation_id.strip():
        raise EventError("stream_id and conversation_id must not be empty")
    index = _field(data, "chunk_index", int)
    if index < 0:
        raise EventError("chunk_index must be >= 0")
    delta = _field(data, "delta", str)
    if len(delta.encode("utf-8", "surrogatepass")) > max_delta_bytes:
        raise EventError(f"delta is over the limit of {max_delta_bytes} bytes")
    final = _field(data, "final", bool)
    if not delta and not final:
        raise EventError("delta is empty (only the final chunk may be)")
    timestamp = _field(data, "timestamp", str)
    if len(timestamp) > MAX_TIMESTAMP_CHARS:
        raise EventError(f"timestamp is {len(timestamp)} characters, over {MAX_TIMESTAMP_CHARS}")
    parse_rfc3339(timestamp)
    context_raw = _field(data, "context", list, required=False)
    context = None if context_raw is None else _checked(parse_turns, context_raw, "context")
    if context is not None and (not context or context[-1].role is not Role.USER):
        raise EventError("context must end with the user's turn the reply answers")
    turn_index = _field(data, "turn_index", int, required=False)
    if turn_index is not None and turn_index < 0:
        raise EventError("turn_index must be >= 0")
    return ReplyChunk(
        stream_id=stream_id,
        conversation_id=conversation_id,
        chunk_index=index,
        delta=delta,
        final=final,
        timestamp=timestamp,
        tenant=_id(data, "tenant", required=False),
        policy_id=_id(data, "policy_id", required=False),
        context=context,
        turn_index=turn_index,
    )


@dataclass(frozen=True, slots=True)
class ReplyVerdict:
    """A verdict on a streamed reply (reply-verdicts topic, key = stream id).

    One per judged window (``window`` counts from 0; ``start``/``end``: the characters
    of the reply it held), then the stream's last one: ``stop`` (a window was unsafe, or
    the stream failed closed: release nothing more of the reply) or ``final`` (the whole
    reply judged: its verdict is also on the verdicts topic, with ``stream_id`` as its
    event id). ``released`` is how many characters of the reply a hold-back client may
    show now."""

    verdict_id: str
    stream_id: str
    conversation_id: str
    window: int
    start: int
    end: int
    verdict: Decision
    p_unsafe: float
    categories: tuple[CategoryRef, ...]
    stop: bool
    final: bool
    released: int
    policy: PolicyRef
    model_name: str
    model_version: str
    decided_at: str
    tenant: str | None = None
    fail_closed: FailClosed | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "verdict_id": self.verdict_id,
            "stream_id": self.stream_id,
            "conversation_id": self.conversation_id,
            "tenant": self.tenant,
            "window": self.window,
            "start": self.start,
            "end": self.end,
            "verdict": self.verdict.value,
            "p_unsafe": self.p_unsafe,
            "categories": [{"code": c.code, "name": c.name} for c in self.categories],
            "stop": self.stop,
            "final": self.final,
            "released": self.released,
            "policy_id": self.policy.id,
            "policy_version": self.policy.version,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "fail_closed": None if self.fail_closed is None else self.fail_closed.value,
            "decided_at": self.decided_at,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def _checked(parse: Any, value: object, what: str) -> Any:
    """``parse(value, what)`` with its error as an :class:`EventError`."""
    try:
        return parse(value, what)
    except InvalidInput as exc:
        raise EventError(str(exc)) from None


def verdict_id(event_id: str, model: str, model_version: str, policy: PolicyRef, basis: str) -> str:
    """Deterministic: the same turn judged by the same model and policy on the same
    basis (the digest of the context it was judged in, or why it failed closed),
    the same id."""
    return str(
        uuid.uuid5(VERDICT_NAMESPACE, f"{event_id}|{model}:{model_version}|{policy}|{basis}")
    )


@dataclass(frozen=True, slots=True)
class VerdictEvent:
    verdict_id: str
    event_id: str
    conversation_id: str
    turn_index: int
    role: str
    verdict: Decision
    p_unsafe: float
    categories: tuple[CategoryRef, ...]
    parse_error: bool
    review_reasons: tuple[ReviewReason, ...]
    policy: PolicyRef
    model_name: str
    model_version: str
    context_turns: int
    latency_ms: float
    turn_timestamp: str
    decided_at: str
    tenant: str | None = None
    #: SHA-256 of the context turns the model saw (:func:`context_digest`).
    context_sha256: str = ""
    #: Set when the turn was not judged whole (the verdict is then unsafe).
    fail_closed: FailClosed | None = None
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict_id": self.verdict_id,
            "event_id": self.event_id,
            "conversation_id": self.conversation_id,
            "turn_index": self.turn_index,
            "role": self.role,
            "verdict": self.verdict.value,
            "p_unsafe": self.p_unsafe,
            "categories": [{"code": c.code, "name": c.name} for c in self.categories],
            "parse_error": self.parse_error,
            "review_reasons": [r.value for r in self.review_reasons],
            "policy_id": self.policy.id,
            "policy_version": self.policy.version,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "context_turns": self.context_turns,
            "context_sha256": self.context_sha256,
            "fail_closed": None if self.fail_closed is None else self.fail_closed.value,
            "latency_ms": self.latency_ms,
            "turn_timestamp": self.turn_timestamp,
            "decided_at": self.decided_at,
            "tenant": self.tenant,
            "schema_version": self.schema_version,
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


@dataclass(frozen=True, slots=True)
class FlaggedEvent:
    """A turn for human review: the turn, the context it was judged in, the verdict."""

    verdict: VerdictEvent
    turn: ChatTurn
    context: tuple[Turn, ...]
    #: Why a fail-closed turn could not be judged, for the reviewer.
    detail: str | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self, max_bytes: int | None = None) -> bytes:
        """The record; with ``max_bytes``, made to fit: first the turn's own copy of
        its ``context`` goes (``context`` holds what the guard saw), then the oldest
        judged context turns (``context_dropped``), then the end of the content
        (``content_truncated``, with its size and SHA-256). The verdict stays whole."""
        turn = self.turn.to_dict()
        doc: dict[str, Any] = {
            "schema_version": self.schema_version,
            "flagged_id": self.verdict.verdict_id,
            "reasons": [r.value for r in self.verdict.review_reasons],
            "turn": turn,
            "context": turns_to_rows(self.context),
            "verdict": self.verdict.to_dict(),
        }
        if self.detail is not None:
            doc["detail"] = self.detail[:2000]
        out = orjson.dumps(doc)
        if max_bytes is None or len(out) <= max_bytes:
            return out
        turn.pop("context", None)
        doc["turn_context_omitted"] = True
        out = orjson.dumps(doc)
        while len(out) > max_bytes and doc["context"]:
            doc["context"] = doc["context"][1:]
            doc["context_dropped"] = len(self.context) - len(doc["context"])
            out = orjson.dumps(doc)
        content = self.turn.content
        while len(out) > max_bytes and turn["content"]:
            turn["content"] = turn["content"][: len(turn["content"]) // 2]
            doc["content_truncated"] = {
                "size": len(content.encode("utf-8")),
                "sha256": hashlib.sha256(content.encode("utf-8")).hexdigest(),
            }
            out = orjson.dumps(doc)
        return out


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    source_topic: str
    partition: int
    offset: int
    original: bytes | None
    key: bytes | None = None
    received_at: str = field(default_factory=now_rfc3339)
    #: The original record's broker timestamp (seconds) and headers.
    original_timestamp: float | None = None
    original_headers: tuple[tuple[str, bytes], ...] = ()
    schema_version: int = SCHEMA_VERSION

    def to_json(self, max_bytes: int | None = None) -> bytes:
        """The record; with ``max_bytes``, the original value and key are cut so that
        the record fits (``*_truncated``), their full size and SHA-256 kept."""
        budget = None if max_bytes is None else max(0, (max_bytes - 2048) * 3 // 4)
        doc: dict[str, Any] = {
            "schema_version": self.schema_version,
            "reason": self.reason[:2000],
            "source_topic": self.source_topic,
            "partition": self.partition,
            "offset": self.offset,
        }
        for name, raw in (("key", self.key), ("original", self.original)):
            kept = raw
            if raw is not None and budget is not None:
                kept = raw[: budget // 2 if name == "key" else budget]
                budget -= len(kept)
            doc[f"{name}_b64"] = None if kept is None else base64.b64encode(kept).decode()
            if raw is not None and kept is not None and len(kept) < len(raw):
                doc[f"{name}_truncated"] = True
                doc[f"{name}_size"] = len(raw)
                doc[f"{name}_sha256"] = hashlib.sha256(raw).hexdigest()
        doc["original_timestamp"] = self.original_timestamp
        headers = []
        if len(self.original_headers) > MAX_HEADERS:
            doc["original_headers_dropped"] = len(self.original_headers) - MAX_HEADERS
        for name, value in self.original_headers[:MAX_HEADERS]:
            kept = value if budget is None else value[: max(0, budget)]
            if budget is not None:
                budget -= len(kept) + len(name)
            headers.append({"name": name[:256], "value_b64": base64.b64encode(kept).decode()})
        doc["original_headers"] = headers
        doc["received_at"] = self.received_at
        return orjson.dumps(doc)


@dataclass(frozen=True, slots=True)
class ReviewEvent:
    """A reviewer's decision on a flagged turn (reviews topic, key = flagged id)."""

    review_id: str
    flagged_id: str
    label: Decision
    categories: tuple[str, ...]
    reviewer: str
    reviewed_at: str
    note: str = ""
    schema_version: int = SCHEMA_VERSION
    #: HMAC-SHA256 (hex) of :meth:`signed_bytes` with the reviewer's key; "" unsigned.
    signature: str = ""

    def _fields(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "review_id": self.review_id,
            "flagged_id": self.flagged_id,
            "label": self.label.value,
            "categories": list(self.categories),
            "reviewer": self.reviewer,
            "reviewed_at": self.reviewed_at,
            "note": self.note,
        }

    def signed_bytes(self) -> bytes:
        """What the signature covers: every field but the signature, canonically."""
        return orjson.dumps(self._fields(), option=orjson.OPT_SORT_KEYS)

    def signed(self, key: bytes) -> ReviewEvent:
        """This review signed with ``key`` (the reviewer's own key)."""
        mac = hmac.new(key, self.signed_bytes(), hashlib.sha256).hexdigest()
        return dataclasses.replace(self, signature=mac)

    def signed_by(self, key: bytes) -> bool:
        """Whether the signature was made with ``key`` over these very fields."""
        mac = hmac.new(key, self.signed_bytes(), hashlib.sha256).hexdigest()
        return bool(self.signature) and hmac.compare_digest(
            mac.encode(), self.signature.encode("utf-8", "replace")
        )

    def to_json(self) -> bytes:
        doc = self._fields()
        if self.signature:
            doc["signature"] = self.signature
        return orjson.dumps(doc)


_HEX64 = re.compile(r"[0-9a-f]{64}")


def decode_review(raw: bytes | None) -> ReviewEvent:
    """Validate a review event's shape (whether its turn and codes exist is checked
    against the flagged turns by the dataset builder)."""
    data = _load_event(raw)
    label = _field(data, "label", str)
    if label not in (Decision.SAFE.value, Decision.UNSAFE.value):
        raise EventError(f"field 'label' must be 'safe' or 'unsafe', got {label[:20]!r}")
    cats = _field(data, "categories", list, required=False) or []
    if not all(isinstance(c, str) and c for c in cats):
        raise EventError("field 'categories' must be a list of category codes")
    if label == Decision.UNSAFE.value and not cats:
        raise EventError("an unsafe label needs at least one category")
    if label == Decision.SAFE.value and cats:
        raise EventError("a safe label takes no categories")
    reviewed_at = _field(data, "reviewed_at", str)
    parse_rfc3339(reviewed_at)
    signature = _field(data, "signature", str, required=False) or ""
    if signature and not _HEX64.fullmatch(signature):
        raise EventError("field 'signature' must be 64 hex digits (HMAC-SHA256)")
    return ReviewEvent(
        review_id=_field(data, "review_id", str),
        flagged_id=_field(data, "flagged_id", str),
        label=Decision(label),
        categories=tuple(cats),
        reviewer=_field(data, "reviewer", str),
        reviewed_at=reviewed_at,
        note=_field(data, "note", str, required=False) or "",
        schema_version=_field(data, "schema_version", int, required=False) or SCHEMA_VERSION,
        signature=signature,
    )
