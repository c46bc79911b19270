"""The moderation step, apart from faust: decode, classify, route, deliver.

The faust agent (``stream_app/agents.py``) hands each batch of raw messages to
:meth:`Moderator.plan` (in arrival order: it updates the per-conversation
context) and then awaits :meth:`Moderator.run`, which returns only when every
output -- verdict, flagged turn or dead letter -- has been acknowledged by the
broker. Only then does the agent ack the input offsets.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from guard.conversation import Role, Turn
from guard.errors import InvalidInput
from guard.events import (
    ChatTurn,
    DeadLetter,
    FailClosed,
    FlaggedEvent,
    Unjudgeable,
    VerdictEvent,
    decode_chat_turn,
)
from guard.protocol import ClassifyRequest, RequestRejected
from guard.settings import Settings
from stream_app.context_cache import ContextCache
from stream_app.metrics import WorkerMetrics
from stream_app.routing import (
    audited,
    conversation_for,
    fail_closed_verdict,
    output_key,
    verdict_for,
)
from stream_app.triton_client import GuardClient, TooSlow

log = logging.getLogger(__name__)

#: send(topic, key, value) -> awaitable that resolves once the broker has the record.
Send = Callable[[str, bytes | None, bytes], Awaitable[Awaitable[object]]]


@dataclass(frozen=True, slots=True)
class RawMessage:
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    #: Broker timestamp of the record (seconds since the epoch), and its headers.
    timestamp: float | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(frozen=True, slots=True)
class Planned:
    msg: RawMessage
    turn: ChatTurn | None
    turns: tuple[Turn, ...] = ()
    error: str | None = None
    #: Set when ``turn`` is addressable but cannot be judged whole.
    fail_closed: FailClosed | None = None


def unjudged_reason(exc: RequestRejected | TooSlow) -> FailClosed:
    """Why a request the model did not judge fails closed."""
    return FailClosed.TOO_SLOW if isinstance(exc, TooSlow) else FailClosed.REJECTED_BY_MODEL


class Moderator:
    def __init__(
        self, settings: Settings, client: GuardClient, send: Send, metrics: WorkerMetrics
    ) -> None:
        self.s = settings
        self.client = client
        self.send = send
        self.metrics = metrics
        self.cache = ContextCache(
            settings.worker.max_context_turns,
            settings.worker.max_conversations,
            max_bytes=settings.worker.max_context_mb * 2**20,
        )
        self._requests = asyncio.Semaphore(settings.worker.max_in_flight)
        self._model = settings.triton.model_name
        key = settings.policy.audit_key
        self.audit_key = key.get_secret_value().encode() if key else secrets.token_bytes(32)
        #: The served model's own default policy, as its verdicts report it: named by the
        #: fail-closed verdicts of turns that name no policy, when the deployment sets none.
        self.served_default_policy: str | None = None

    @property
    def fail_closed_policy(self) -> str | None:
        """Policy id of a fail-closed verdict for a turn that names none: the deployment's
        default, else the served model's (None: neither known, ``routing`` falls back)."""
        return self.s.policy.default_policy_id or self.served_default_policy

    async def learn_default_policy(self) -> None:
        """Ask the served model which policy it applies to turns that name none (one fixed
        probe turn; a failure leaves it to be learnt from the first such verdict)."""
        probe = ClassifyRequest((Turn(Role.USER, "Hello."),), Role.USER)
        try:
            result = await self.client.classify(probe)
        except Exception as exc:  # the stream must start all the same
            log.warning("could not learn the served model's default policy: %s", exc)
            return
        self.served_default_policy = result.answer.policy.id

    def plan(self, batch: Sequence[RawMessage]) -> list[Planned]:
        """Decode each message and attach its conversation, in arrival order."""
        out = []
        for msg in batch:
            self.metrics.turns_in.inc()
            try:
                turn = decode_chat_turn(msg.value, self.s.worker.max_content_bytes)
            except Unjudgeable as exc:
                out.append(Planned(msg, exc.turn, error=str(exc), fail_closed=exc.reason))
                continue
            except InvalidInput as exc:
                out.append(Planned(msg, None, error=str(exc)))
                continue
            key = (turn.tenant, turn.conversation_id)
            history = self.cache.history(key, turn.turn_index)
            turns = conversation_for(
                turn, history, self.s.worker.max_context_turns, self.s.worker.max_context_chars
            )
            self.cache.add(key, turn.turn_index, Turn(turn.role, turn.content))
            out.append(Planned(msg, turn, turns))
        return out

    async def run(self, planned: Sequence[Planned]) -> None:
        """Classify and deliver every planned message; return when all are durable."""
        self.metrics.batch_size.observe(len(planned))
        judged = await asyncio.gather(*(self.judge(p) for p in planned))
        await asyncio.gather(*(d for _, ds in judged for d in ds))

    async def judge(self, p: Planned) -> tuple[VerdictEvent | None, list[Awaitable[object]]]:
        """Classify one planned message and send its outputs: its verdict (None for a
        dead letter) and the sends to await before its offset may be committed."""
        if p.turn is None:
            return None, [await self.dead_letter(p.msg, p.error or "malformed", "malformed")]
        if p.fail_closed is not None:
            verdict = fail_closed_verdict(
                p.turn, p.fail_closed, self._model, self.fail_closed_policy
            )
            return verdict, await self.deliver(p, verdict, ())
        req = ClassifyRequest(p.turns, p.turn.role, p.turn.policy_id or "")
        async with self._requests:
            try:
                result = await self.client.classify(req, retry_forever=True)
            except (RequestRejected, TooSlow) as exc:
                reason = unjudged_reason(exc)
                verdict = fail_closed_verdict(p.turn, reason, self._model, self.fail_closed_policy)
                sends = await self.deliver(p, verdict, req.turns[:-1], f"{reason}: {exc}")
                return verdict, sends
        self.metrics.triton_latency.observe(result.latency_ms / 1000.0)
        if not req.policy_id:  # the model (or a promoted one) says what its default is
            self.served_default_policy = result.answer.policy.id
        band = (self.s.policy.review_band_low, self.s.policy.review_band_high)
        context = req.turns[:-1]
        audit = audited(p.turn, self.s.policy.audit_rate, self.audit_key)
        verdict = verdict_for(p.turn, result, context, band, audit)
        return verdict, await self.deliver(p, verdict, context)

    async def deliver(
        self,
        p: Planned,
        verdict: VerdictEvent,
        context: tuple[Turn, ...],
        detail: str | None = None,
    ) -> list[Awaitable[object]]:
        """Send the verdict, and the flagged turn when it goes to review."""
        assert p.turn is not None
        detail = detail or p.error
        self._count(verdict)
        if verdict.fail_closed is not None:
            log.warning(
                "fail-closed verdict for event %s: %s", p.turn.event_id[:80], (detail or "")[:200]
            )
        key = output_key(p.msg.key)
        sends = [await self.send(self.s.topics.verdicts, key, verdict.to_json())]
        if verdict.review_reasons:
            flagged = FlaggedEvent(verdict, p.turn, context, detail)
            record = flagged.to_json(self.s.kafka.max_record_bytes)
            sends.append(await self.send(self.s.topics.flagged, key, record))
        if self.s.worker.log_content:
            log.info("verdict %s for %r", verdict.verdict.value, p.turn.content[:200])
        return sends

    def _count(self, v: VerdictEvent) -> None:
        self.metrics.verdicts.labels(v.verdict.value).inc()
        for c in v.categories:
            self.metrics.categories.labels(v.policy.id, c.code, c.name).inc()
        for reason in v.review_reasons:
            self.metrics.flagged.labels(reason.value).inc()
        if v.parse_error:
            self.metrics.parse_errors.inc()

    async def dead_letter(self, msg: RawMessage, reason: str, kind: str) -> Awaitable[object]:
        self.metrics.dead_letters.labels(kind).inc()
        log.warning("dead letter %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, reason[:200])
        dl = DeadLetter(
            reason,
            msg.topic,
            msg.partition,
            msg.offset,
            msg.value,
            msg.key,
            original_timestamp=msg.timestamp,
            original_headers=msg.headers,
        )
        record = dl.to_json(self.s.kafka.max_record_bytes)
        return await self.send(self.s.topics.dlq, output_key(msg.key), record)
