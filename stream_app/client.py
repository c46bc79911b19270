"""The async Python client for applications (docs/streaming.md).

:class:`GuardstreamClient` produces chat turns and streamed replies to guardstream's
topics and follows its verdict topics, matching each verdict to what asked for it:

* ``await client.moderate(turn)``: produce a turn, return its verdict (correlated by
  tenant and event id), or raise :class:`TimeoutError`;
* ``client.reply(...)``: a :class:`ReplyGuard` for one agent reply streamed while it is
  generated. ``await guard.write(delta)`` sends a chunk and returns the text the user
  may see now; ``await guard.close()`` sends the final chunk and returns the rest once
  the whole reply is judged. Either raises :class:`ReplyStopped` once guardstream
  stops the reply.

Modes of a reply guard:

* ``hold_back`` (default): text is shown only after every window that holds it, and
  the next one (the worker's release lag), was judged safe, and the end of the reply
  only after the whole reply was: nothing is shown that the model has not judged, at
  the cost of about two windows of delay (what the model misses is shown;
  docs/performance.md measures how often).
* ``low_latency``: text is shown at once; a stop verdict raises :class:`ReplyStopped`
  on the next call (and sets :attr:`ReplyGuard.stopped`), and the application retracts
  what it showed.

The client reads the verdict topics from their end when it starts, so it sees the
verdicts of what it sends after that (each client instance reads every partition; an
application with many instances filters by its own ids, as this client does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from guard.conversation import Role, Turn
from guard.events import ChatTurn, ReplyChunk, now_rfc3339
from guard.settings import Settings
from stream_app.idle_fetch import install_idle_fetch_backoff
from stream_app.kafka_config import aiokafka_options

log = logging.getLogger(__name__)

Mode = Literal["hold_back", "low_latency"]


class ReplyStopped(Exception):
    """guardstream stopped the reply: show nothing more of it (``verdict``: the stop
    verdict, with its categories, or ``fail_closed`` when it could not be judged)."""

    def __init__(self, verdict: dict[str, Any]) -> None:
        reason = verdict.get("fail_closed") or ",".join(
            c["code"] for c in verdict.get("categories", [])
        )
        super().__init__(f"reply {verdict.get('stream_id')} stopped ({reason or 'unsafe'})")
        self.verdict = verdict


@dataclass
class ReplyState:
    """What the client knows of one streamed reply: pure bookkeeping, no I/O."""

    mode: Mode
    text: str = ""
    shown: int = 0
    released: int = 0
    final: dict[str, Any] | None = None
    stop: dict[str, Any] | None = None
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    #: When each verdict arrived (the event loop's clock), for latency measurements.
    arrived: list[float] = field(default_factory=list)

    def on_verdict(self, v: dict[str, Any], at: float = 0.0) -> None:
        self.verdicts.append(v)
        self.arrived.append(at)
        if v.get("stop"):
            self.stop = self.stop or v
        elif v.get("final"):
            self.final = v
        if not self.stop:
            self.released = max(self.released, int(v.get("released", 0)))

    def take(self) -> str:
        """The text not yet shown that may be shown now."""
        if self.stop is not None:
            raise ReplyStopped(self.stop)
        upto = len(self.text) if self.mode == "low_latency" else min(self.released, len(self.text))
        out, self.shown = self.text[self.shown : upto], max(self.shown, upto)
        return out


class ReplyGuard:
    """One streamed reply (see the module docstring); made by :meth:`GuardstreamClient.reply`."""

    def __init__(self, client: GuardstreamClient, chunk0: ReplyChunk, mode: Mode) -> None:
        self._client = client
        self._chunk0 = chunk0
        self._next = 0
        self.state = ReplyState(mode)
        self._changed = asyncio.Event()
        self._waited = 0

    @property
    def stream_id(self) -> str:
        return self._chunk0.stream_id

    @property
    def stopped(self) -> bool:
        return self.state.stop is not None

    def _on_verdict(self, v: dict[str, Any]) -> None:
        self.state.on_verdict(v, asyncio.get_running_loop().time())
        self._changed.set()

    async def write(self, delta: str) -> str:
        """Send ``delta`` as the next chunk; the text the user may see now."""
        self._raise_if_stopped()  # send nothing more once stopped
        if delta:
            await self._send(delta, final=False)
        return self._take()

    async def wait(self, timeout_s: float | None = None) -> str:
        """Wait for a verdict not waited for yet (or ``timeout_s``), then what may be
        shown."""
        if len(self.state.verdicts) <= self._waited:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout_s)
        self._waited = len(self.state.verdicts)
        return self._take()

    def _raise_if_stopped(self) -> None:
        if self.state.stop is not None:
            self._client._forget(self)
            raise ReplyStopped(self.state.stop)

    def _take(self) -> str:
        try:
            return self.state.take()
        except ReplyStopped:
            self._client._forget(self)
            raise

    async def close(self, timeout_s: float | None = None) -> str:
        """Send the final chunk and wait for the whole reply's verdict; the rest of the
        reply to show. Raises :class:`ReplyStopped` or :class:`TimeoutError`."""
        try:
            self._raise_if_stopped()
            await self._send("", final=True)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + (timeout_s or self._client.timeout_s)
            while self.state.final is None and self.state.stop is None:
                left = deadline - loop.time()
                if left <= 0:
                    raise TimeoutError(f"no final verdict for reply {self.stream_id}")
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), left)
            return self._take()
        finally:
            self._client._forget(self)

    async def _send(self, delta: str, final: bool) -> None:
        c0 = self._chunk0
        chunk = ReplyChunk(
            stream_id=c0.stream_id,
            conversation_id=c0.conversation_id,
            chunk_index=self._next,
            delta=delta,
            final=final,
            timestamp=now_rfc3339(),
            tenant=c0.tenant,
            policy_id=c0.policy_id,
            context=c0.context if self._next == 0 else None,
            turn_index=c0.turn_index if self._next == 0 else None,
        )
        self._next += 1
        self.state.text += delta
        await self._client._produce(self._client.s.topics.reply_chunks, chunk.stream_id, chunk)


class GuardstreamClient:
    """Produce turns and replies, await their verdicts (see the module docstring)."""

    def __init__(self, settings: Settings, timeout_s: float = 30.0) -> None:
        self.s = settings
        self.timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._reader: asyncio.Task[None] | None = None
        self._turns: dict[tuple[str | None, str], asyncio.Future[dict[str, Any]]] = {}
        self._replies: dict[tuple[str | None, str], ReplyGuard] = {}

    async def __aenter__(self) -> GuardstreamClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        # An idle consumer must not fetch back to back from a broker that answers
        # empty fetches at once (the local one): it would burn a core.
        install_idle_fetch_backoff(self.s.kafka.idle_fetch_backoff_ms)
        opts = aiokafka_options(self.s.kafka)
        self._producer = AIOKafkaProducer(
            **opts, acks="all", enable_idempotence=True, linger_ms=0,
            max_request_size=self.s.kafka.max_record_bytes,
        )  # fmt: skip
        await self._producer.start()
        topics = [self.s.topics.verdicts, self.s.topics.reply_verdicts]
        self._consumer = AIOKafkaConsumer(**opts, group_id=None, enable_auto_commit=False)
        await self._consumer.start()
        tps = []
        for topic in topics:
            parts = await self._partitions(topic)
            tps += [TopicPartition(topic, p) for p in parts]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:  # positioned before anything is sent: no verdict is missed
            await self._consumer.position(tp)
        self._reader = asyncio.ensure_future(self._read())

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for part in (self._consumer, self._producer):
            if part is not None:
                await part.stop()

    async def moderate(self, turn: ChatTurn, timeout_s: float | None = None) -> dict[str, Any]:
        """Produce ``turn`` and return its verdict event (docs/events.md)."""
        key = (turn.tenant, turn.event_id)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._turns[key] = future
        try:
            await self._produce(self.s.topics.input, turn.conversation_id, turn)
            return await asyncio.wait_for(future, timeout_s or self.timeout_s)
        finally:
            self._turns.pop(key, None)

    def reply(
        self,
        conversation_id: str,
        context: Sequence[Turn],
        *,
        stream_id: str | None = None,
        tenant: str | None = None,
        policy_id: str | None = None,
        turn_index: int | None = None,
        mode: Mode = "hold_back",
    ) -> ReplyGuard:
        """A guard for one agent reply to the last turn of ``context`` (a user turn)."""
        context = tuple(context)
        if not context or context[-1].role is not Role.USER:
            raise ValueError("context must end with the user's turn the reply answers")
        chunk0 = ReplyChunk(
            stream_id=stream_id or uuid.uuid4().hex,
            conversation_id=conversation_id,
            chunk_index=0,
            delta="",
            final=False,
            timestamp=now_rfc3339(),
            tenant=tenant,
            policy_id=policy_id,
            context=context,
            turn_index=turn_index,
        )
        guard = ReplyGuard(self, chunk0, mode)
        self._replies[(tenant, guard.stream_id)] = guard
        return guard

    def _forget(self, guard: ReplyGuard) -> None:
        self._replies.pop((guard._chunk0.tenant, guard.stream_id), None)

    async def _produce(self, topic: str, key: str, event: ChatTurn | ReplyChunk) -> None:
        assert self._producer is not None, "start the client first (async with ...)"
        await (await self._producer.send(topic, event.to_json(), key=key.encode()))

    async def _partitions(self, topic: str) -> set[int]:
        assert self._consumer is not None
        for _ in range(50):
            parts = self._consumer.partitions_for_topic(topic)
            if parts:
                return set(parts)
            await self._consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        raise RuntimeError(f"topic {topic} does not exist (guardstream topics creates it)")

    async def _read(self) -> None:
        """Follow the verdict topics for as long as the client runs; a broker error is
        logged and retried, a record that is not a JSON object skipped."""
        assert self._consumer is not None
        while True:
            try:
                batches = await self._consumer.getmany(timeout_ms=500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("reading verdicts failed, retrying: %s", exc)
                await asyncio.sleep(1.0)
                continue
            for tp, records in batches.items():
                for r in records:
                    try:
                        v = orjson.loads(r.value) if r.value is not None else None
                    except orjson.JSONDecodeError:
                        v = None
                    if isinstance(v, dict):
                        self._dispatch(tp.topic, v)

    def _dispatch(self, topic: str, v: dict[str, Any]) -> None:
        if topic == self.s.topics.reply_verdicts:
            guard = self._replies.get((v.get("tenant"), str(v.get("stream_id"))))
            if guard is not None:
                guard._on_verdict(v)
            return
        future = self._turns.get((v.get("tenant"), str(v.get("event_id"))))
        if future is not None and not future.done():
            future.set_result(v)
