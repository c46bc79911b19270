"""The moderation step's rules, as pure functions: what the guard sees, what goes where.

* :func:`conversation_for`: the conversation a turn is judged in;
* :func:`review_reasons`: whether (and why) a verdict goes to human review;
* :func:`verdict_for`: the verdict event of a turn and the model's answer;
* :func:`fail_closed_verdict`: the verdict of a turn that cannot be judged whole.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from guard.conversation import Role, Turn
from guard.events import (
    ChatTurn,
    Decision,
    FailClosed,
    ReviewReason,
    VerdictEvent,
    context_digest,
    now_rfc3339,
    verdict_id,
)
from guard.protocol import Classification
from guard.taxonomy import DEFAULT_POLICY_ID, PolicyRef

#: Longest input key copied as it is onto output records (bytes).
MAX_KEY_BYTES = 1024

#: The user turn put before an agent turn whose user turn is unknown.
MISSING_USER_TURN = "[earlier conversation unavailable]"


def conversation_for(
    turn: ChatTurn, history: Sequence[Turn], max_context: int, max_context_chars: int | None = None
) -> tuple[Turn, ...]:
    """The turns the guard sees: the last ``max_context`` turns of context (from the
    event, else ``history``) and this turn.

    With ``max_context_chars``, the oldest context turns are dropped until the
    context fits, so that long earlier turns can never push the turn being judged
    over the model's size limit; the turn itself is never dropped. An agent turn
    with no user turn left before it gets a placeholder user turn so that it can
    still be checked as a response.
    """
    context = turn.context if turn.context is not None else tuple(history)
    context = tuple(context[-max_context:]) if max_context else ()
    if max_context_chars is not None:
        while context and sum(len(t.content) for t in context) > max_context_chars:
            context = context[1:]
    turns = (*context, Turn(turn.role, turn.content))
    if turn.role is Role.AGENT and not any(t.role is Role.USER for t in context):
        turns = (Turn(Role.USER, MISSING_USER_TURN), *turns)
    return turns


def review_reasons(
    unsafe: bool,
    parse_error: bool,
    p_unsafe: float,
    band: tuple[float, float],
    audit: bool = False,
) -> tuple[ReviewReason, ...]:
    """Why a verdict goes to human review (empty: it does not). ``audit``: the turn is
    in the audit sample, which only counts for a verdict no other rule sends."""
    reasons = []
    if unsafe:
        reasons.append(ReviewReason.UNSAFE)
    if parse_error:
        reasons.append(ReviewReason.PARSE_ERROR)
    if band[0] <= p_unsafe <= band[1]:
        reasons.append(ReviewReason.UNCERTAIN)
    if audit and not reasons:
        reasons.append(ReviewReason.AUDIT)
    return tuple(reasons)


def audited(turn: ChatTurn, rate: float, key: bytes) -> bool:
    """Whether ``turn`` is in the audit sample: a keyed hash of its ids and content below
    ``rate``. The same turn, redelivered, is chosen alike; without the key, a producer
    cannot tell which turns are chosen, and reusing one event id for many turns does not
    give them all one draw."""
    if rate <= 0:
        return False
    what = f"{turn.event_id}\x00{turn.conversation_id}\x00{turn.content}".encode()
    digest = hmac.new(key, what, hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") < rate * 2**64


def verdict_for(
    turn: ChatTurn,
    r: Classification,
    context: Sequence[Turn],
    band: tuple[float, float],
    audit: bool = False,
) -> VerdictEvent:
    """The verdict event for ``turn`` judged as ``r`` after the turns ``context``.

    The verdict names the context by its digest, and so does its id: a turn judged
    again in the same context (a redelivery) gets the same id; judged in another
    (its earlier turns were unknown after a restart) it gets another id, and the
    verdict says so."""
    a = r.answer
    digest = context_digest(context)
    return VerdictEvent(
        verdict_id=verdict_id(turn.event_id, r.model_name, r.model_version, a.policy, digest),
        event_id=turn.event_id,
        conversation_id=turn.conversation_id,
        turn_index=turn.turn_index,
        role=turn.role.value,
        verdict=Decision.UNSAFE if a.unsafe else Decision.SAFE,
        p_unsafe=round(a.p_unsafe, 6),
        categories=a.categories,
        parse_error=a.parse_error,
        review_reasons=review_reasons(a.unsafe, a.parse_error, a.p_unsafe, band, audit),
        policy=a.policy,
        model_name=r.model_name,
        model_version=r.model_version,
        context_turns=len(context),
        latency_ms=round(r.latency_ms, 3),
        turn_timestamp=turn.timestamp,
        decided_at=now_rfc3339(),
        tenant=turn.tenant,
        context_sha256=digest,
    )


def fail_closed_verdict(
    turn: ChatTurn, reason: FailClosed, model_name: str, default_policy_id: str | None = None
) -> VerdictEvent:
    """Unsafe, to review, with ``reason``: the verdict of a turn no model judged whole.

    No model version or policy version answered, so both are empty; the policy id
    is the turn's own, else ``default_policy_id`` (the deployment's
    ``GUARDSTREAM_POLICY__DEFAULT_POLICY_ID``, else the served model's own default as
    its verdicts report it), else ``llama-guard-1``, so that a reviewer knows its
    categories.
    """
    policy = PolicyRef(turn.policy_id or default_policy_id or DEFAULT_POLICY_ID, "")
    return VerdictEvent(
        verdict_id=verdict_id(turn.event_id, model_name, "", policy, f"fail_closed:{reason}"),
        event_id=turn.event_id,
        conversation_id=turn.conversation_id,
        turn_index=turn.turn_index,
        role=turn.role.value,
        verdict=Decision.UNSAFE,
        p_unsafe=1.0,
        categories=(),
        parse_error=False,
        review_reasons=(ReviewReason.FAIL_CLOSED,),
        policy=policy,
        model_name=model_name,
        model_version="",
        context_turns=0,
        latency_ms=0.0,
        turn_timestamp=turn.timestamp,
        decided_at=now_rfc3339(),
        tenant=turn.tenant,
        fail_closed=reason,
    )


def output_key(key: bytes | None) -> bytes | None:
    """The input record's key, or ``sha256:<hex>`` of it when it is longer than
    :data:`MAX_KEY_BYTES`: an output record stays bounded whatever the key, and
    equal keys still land on one partition."""
    if key is None or len(key) <= MAX_KEY_BYTES:
        return key
    return b"sha256:" + hashlib.sha256(key).hexdigest().encode()
