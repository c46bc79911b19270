"""Review decisions + flagged turns (+ seed data) -> a versioned dataset snapshot.

Rows use the evaluation format (one JSON object per line)::

    {"id": "...", "conversation_id": "...", "source": "review",
     "conversation": [{"role": "user", "content": "..."}, ...],
     "label": "safe" | "unsafe", "categories": ["O3"], "policy_id": "llama-guard-1"}

The side checked is the role of the last turn. The split is a keyed hash (HMAC) of the
conversation id, so a conversation never straddles train and validation, a row keeps its
split across runs and dataset versions, and a producer, who chooses conversation ids,
cannot choose the split without the deployment's key.

Reviews are resolved by a stated rule (:func:`consensus`): each reviewer's latest decision
in the order the broker received them counts (the event's own ``reviewed_at`` decides
nothing, so a review dated in the future overrides nobody); a label needs a strict
majority of the reviewers; a tie waits for another review and is left out meanwhile.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from guard.conversation import Role, Turn, check_conversation, parse_turns, turns_to_rows
from guard.errors import InvalidInput
from guard.events import Decision, EventError, ReviewEvent, decode_review
from guard.taxonomy import DEFAULT_POLICY_ID, PolicyRegistry


@dataclass(frozen=True, slots=True)
class Example:
    id: str
    conversation_id: str
    turns: tuple[Turn, ...]
    unsafe: bool
    categories: tuple[str, ...]
    policy_id: str = DEFAULT_POLICY_ID
    source: str = "review"

    @property
    def side(self) -> Role:
        return self.turns[-1].role

    def to_row(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "source": self.source,
            "conversation": turns_to_rows(self.turns),
            "label": "unsafe" if self.unsafe else "safe",
            "categories": list(self.categories),
            "policy_id": self.policy_id,
        }


@dataclass(frozen=True, slots=True)
class Rejection:
    """A review (or row) left out of the dataset, and why."""

    ref: str
    reason: str


class RowError(InvalidInput):
    """A dataset row cannot be read; the message says why."""


def example_from_row(row: Mapping[str, Any], policies: PolicyRegistry | None = None) -> Example:
    """Validate one evaluation-format row."""
    if not isinstance(row, Mapping):
        raise RowError("row must be a JSON object")
    rid = row.get("id")
    if not isinstance(rid, str) or not rid:
        raise RowError("missing 'id'")
    try:
        turns = parse_turns(row.get("conversation"))
        check_conversation(turns, turns[-1].role if turns else Role.USER)
    except InvalidInput as exc:
        raise RowError(str(exc)) from None
    label = row.get("label")
    if label not in ("safe", "unsafe"):
        raise RowError(f"'label' must be 'safe' or 'unsafe', got {label!r}")
    cats = row.get("categories") or []
    if not isinstance(cats, list) or not all(isinstance(c, str) for c in cats):
        raise RowError("'categories' must be a list of codes")
    policy_id = str(row.get("policy_id") or DEFAULT_POLICY_ID)
    if policies is not None:
        try:
            policy = policies.get(policy_id)
        except InvalidInput as exc:
            raise RowError(str(exc)) from None
        unknown = [c for c in cats if c not in policy.codes]
        if unknown:
            raise RowError(f"unknown categories for {policy.ref}: {', '.join(unknown)}")
    return Example(
        id=rid,
        conversation_id=str(row.get("conversation_id") or rid),
        turns=turns,
        unsafe=label == "unsafe",
        categories=tuple(cats),
        policy_id=policy_id,
        source=str(row.get("source") or "seed"),
    )


def trainable(examples: Sequence[Example]) -> tuple[list[Example], list[Rejection]]:
    """The examples a training answer can be written for, and the others with the reason:
    an unsafe example must name its violated categories and a safe one none (evaluation
    data may carry binary labels only; relabelling such a row would teach a wrong answer)."""
    usable, refused = [], []
    for ex in examples:
        if ex.unsafe == bool(ex.categories):
            usable.append(ex)
        else:
            refused.append(
                Rejection(
                    ex.id, "an unsafe row needs its violated categories and a safe row names none"
                )
            )
    return usable, refused


def read_rows(
    path: Path, policies: PolicyRegistry | None = None
) -> tuple[list[Example], list[Rejection]]:
    """Examples from a JSONL file, and the lines that could not be read (never dropped silently)."""
    examples, rejected = [], []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            examples.append(example_from_row(orjson.loads(line), policies))
        except (orjson.JSONDecodeError, RowError) as exc:
            rejected.append(Rejection(f"{path}:{n}", str(exc)))
    return examples, rejected


def join_reviews(
    flagged: Iterable[bytes],
    reviews: Iterable[bytes],
    policies: PolicyRegistry,
    reviewer_keys: Mapping[str, bytes] | None = None,
) -> tuple[list[Example], list[Rejection]]:
    """Examples from review decisions joined with their flagged turns.

    ``reviews`` in the order the broker holds them (one partition per flagged turn, as
    the reviews topic is keyed). Per flagged turn, each reviewer's latest decision counts
    and :func:`consensus` decides. A review
    that is malformed, names an unknown turn, a turn whose flagged record holds
    only part of it (the label is about text not kept) or that failed closed (no
    model could judge it as it is, so neither can retraining or its evaluation),
    or uses a category code the turn's policy does not have is rejected with its
    reason. With ``reviewer_keys`` (reviewer id -> key), so is a review not signed with
    its reviewer's key: the reviewer is who holds the key, not who the event says.
    """
    turns: dict[str, dict[str, Any]] = {}
    for raw in flagged:
        try:
            event = orjson.loads(raw)
            turns[str(event["flagged_id"])] = event
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # the worker wrote it; a bad one cannot be reviewed anyway
    latest: dict[str, dict[str, ReviewEvent]] = {}
    rejected: list[Rejection] = []
    seen: set[str] = set()
    for raw in reviews:
        try:
            review = decode_review(raw)
        except EventError as exc:
            rejected.append(Rejection(_ref(raw), f"malformed review: {exc}"))
            continue
        if reviewer_keys:
            key = reviewer_keys.get(review.reviewer)
            if key is None or not review.signed_by(key):
                rejected.append(
                    Rejection(
                        review.review_id,
                        f"not signed with reviewer {review.reviewer[:64]!r}'s key: "
                        "unsigned, forged or altered",
                    )
                )
                continue
        # A redelivery, or an old (validly signed) review replayed after a newer one:
        # the first arrival of a review id is the one that counts.
        if review.review_id in seen:
            continue
        seen.add(review.review_id)
        flagged_turn = turns.get(review.flagged_id)
        if flagged_turn is None:
            rejected.append(
                Rejection(review.review_id, f"unknown flagged turn {review.flagged_id!r}")
            )
            continue
        if "content_truncated" in flagged_turn:
            rejected.append(
                Rejection(review.review_id, "the flagged turn was truncated: not trainable")
            )
            continue
        if flagged_turn["verdict"].get("fail_closed"):
            reason = (
                f"the turn failed closed ({flagged_turn['verdict']['fail_closed']}): not trainable"
            )
            rejected.append(Rejection(review.review_id, reason))
            continue
        policy_id = str(flagged_turn["verdict"]["policy_id"])
        try:
            policy = policies.get(policy_id)
        except InvalidInput as exc:
            rejected.append(Rejection(review.review_id, str(exc)))
            continue
        unknown = [c for c in review.categories if c not in policy.codes]
        if unknown:
            rejected.append(
                Rejection(
                    review.review_id, f"unknown categories for {policy.ref}: {', '.join(unknown)}"
                )
            )
            continue
        latest.setdefault(review.flagged_id, {})[review.reviewer] = review
    examples = []
    for fid, by_reviewer in sorted(latest.items()):
        decided = consensus(list(by_reviewer.values()))
        if isinstance(decided, str):
            rejected.append(Rejection(fid, decided))
            continue
        label, codes = decided
        event = turns[fid]
        turn = event["turn"]
        convo = [*event.get("context", []), {"role": turn["role"], "content": turn["content"]}]
        examples.append(
            Example(
                id=fid,
                conversation_id=str(turn["conversation_id"]),
                turns=parse_turns(convo),
                unsafe=label is Decision.UNSAFE,
                categories=codes,
                policy_id=str(event["verdict"]["policy_id"]),
                # A turn sampled from confident verdicts: the slice that shows misses.
                source="audit" if event.get("reasons") == ["audit"] else "review",
            )
        )
    return examples, rejected


def _ref(raw: bytes | None) -> str:
    try:
        return str(orjson.loads(raw or b"{}").get("review_id", "?"))
    except (orjson.JSONDecodeError, AttributeError):
        return "?"


def consensus(decisions: Sequence[ReviewEvent]) -> tuple[Decision, tuple[str, ...]] | str:
    """The label of a flagged turn from its reviewers' decisions (one each), or why none.

    The label needs a strict majority of the reviewers (one reviewer is a majority of
    one); a tie is left out until a further review breaks it. An unsafe label's
    categories are those a majority of the unsafe reviewers named, else every one they
    named.
    """
    labels = Counter(d.label for d in decisions)
    label, votes = labels.most_common(1)[0]
    if votes * 2 <= len(decisions):
        tally = ", ".join(f"{n} {lab.value}" for lab, n in sorted(labels.items()))
        return f"reviewers disagree ({tally}): a further review decides"
    if label is Decision.SAFE:
        return label, ()
    agreeing = [d for d in decisions if d.label is label]
    named = Counter(c for d in agreeing for c in set(d.categories))
    majority = sorted(c for c, n in named.items() if n * 2 > len(agreeing))
    return label, tuple(majority or sorted(named))


def split_of(
    conversation_id: str, validation_fraction: float, key: bytes, calibration_fraction: float = 0.0
) -> str:
    """``train``, ``validation`` or ``calibration``: a keyed hash of the conversation id,
    stable across runs for one key, and unpredictable to whoever chooses conversation ids
    without it. The calibration share is cut from what would be train, so a conversation
    in validation stays there whatever ``calibration_fraction`` is."""
    digest = hmac.new(key, conversation_id.encode(), hashlib.sha256).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    if bucket < validation_fraction:
        return "validation"
    return "calibration" if bucket < validation_fraction + calibration_fraction else "train"


@dataclass(frozen=True, slots=True)
class Snapshot:
    path: Path
    version: str
    train: list[Example]
    validation: list[Example]
    #: Reviewed rows that neither train nor evaluate: the operating point is held on them.
    calibration: list[Example] = field(default_factory=list)


def write_snapshot(
    root: Path,
    examples: Sequence[Example],
    validation_fraction: float,
    split_key: bytes,
    rejected: Sequence[Rejection] = (),
    calibration_fraction: float = 0.0,
) -> Snapshot:
    """Write ``root/<version>/{train,validation,calibration}.jsonl`` + ``manifest.json``
    atomically.

    The version is a hash of the content, so the same data gives the same version.
    """
    ordered = sorted(examples, key=lambda e: e.id)
    splits: dict[str, list[Example]] = {"train": [], "validation": [], "calibration": []}
    for e in ordered:
        name = split_of(e.conversation_id, validation_fraction, split_key, calibration_fraction)
        splits[name].append(e)
    blobs = {
        name: b"".join(orjson.dumps(e.to_row()) + b"\n" for e in rows)
        for name, rows in splits.items()
    }
    parts = [blobs["train"], blobs["validation"]]
    if splits["calibration"]:  # without one, versions are what they were
        parts.append(blobs["calibration"])
    version = hashlib.sha256(b"|".join(parts)).hexdigest()[:12]
    final = root / version
    if not final.exists():
        tmp = root / f".tmp-{version}-{os.getpid()}"
        tmp.mkdir(parents=True, exist_ok=True)
        for name, blob in blobs.items():
            (tmp / f"{name}.jsonl").write_bytes(blob)
        (tmp / "manifest.json").write_text(
            json.dumps(
                {
                    "version": version,
                    "validation_fraction": validation_fraction,
                    "calibration_fraction": calibration_fraction,
                    "split": "HMAC-SHA256 of the conversation id (key not recorded)",
                    "counts": {k: len(v) for k, v in splits.items()},
                    "unsafe": {k: sum(e.unsafe for e in v) for k, v in splits.items()},
                    "rejected": [{"ref": r.ref, "reason": r.reason} for r in rejected],
                },
                indent=2,
            )
        )
        os.replace(tmp, final)
    return Snapshot(final, version, splits["train"], splits["validation"], splits["calibration"])


def calibration_rows(
    calibration: Sequence[Example], min_rows: int
) -> tuple[list[Example], list[Example]]:
    """The calibration split as used: (the reviewed rows of each side with at least
    ``min_rows`` safe reviewed rows, which hold the operating point; the rest, which
    train: seed rows, which are not the deployment's traffic, and the rows of a side
    with too few to hold anything)."""
    reviewed = [e for e in calibration if e.source in ("review", "audit")]
    safe = Counter(e.side for e in reviewed if not e.unsafe)
    enough = {side for side, n in safe.items() if n >= min_rows}

    def holds(e: Example) -> bool:
        return e.source in ("review", "audit") and e.side in enough

    return [e for e in calibration if holds(e)], [e for e in calibration if not holds(e)]


def split_key(configured: bytes | None, key_file: Path) -> bytes:
    """The split key: the configured one, else the one kept in ``key_file`` (made once,
    readable by its owner only, and kept with the model repository so that every run
    splits alike)."""
    if configured:
        return configured
    if not key_file.exists():
        key_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = key_file.with_name(f".{key_file.name}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(32))
        try:
            os.link(tmp, key_file)  # atomic, and never replaces a key another run made
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return key_file.read_bytes()
