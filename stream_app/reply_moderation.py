"""Streamed agent replies, moderated while they grow (docs/streaming.md).

The faust agent on the reply-chunks topic hands each batch of raw records to
:meth:`ReplyModerator.take`. Per stream (tenant and stream id), the chunks are put in
order (:class:`guard.reply_stream.ReplyAssembler`), and each window of the reply
(:func:`guard.reply_stream.plan_windows`) is judged once, when it is complete:

* a safe window: a window verdict on the reply-verdicts topic, saying how much of the
  reply a hold-back client may now show;
* an unsafe window: a stop verdict, and the stream's verdict (unsafe, on what arrived)
  on the verdicts topic and to review;
* the whole reply, once its final chunk is in and every window was safe: the normal
  verdict of the assembled reply (event id = stream id) through the turn path
  (:meth:`stream_app.moderation.Moderator.judge`), then a final reply verdict;
* a stream that contradicts itself, overflows, or stops sending for ``streams.idle_s``:
  fails closed (stop, and an unsafe fail-closed verdict to review), and its state is
  freed.

At least once: a stream's chunk records are acked only when the stream has its last
verdict (stop or final) on the broker, so a worker that dies mid-stream leaves them to
be read again; every verdict id is deterministic, so the verdicts sent twice are
duplicates. Streams that ended keep a small tombstone so that chunks still arriving for
them are acked without being judged.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from guard.conversation import Role, Turn
from guard.errors import InvalidInput
from guard.events import (
    ChatTurn,
    Decision,
    FailClosed,
    ReplyChunk,
    ReplyVerdict,
    VerdictEvent,
    decode_reply_chunk,
    now_rfc3339,
    verdict_id,
)
from guard.protocol import Classification, ClassifyRequest, RequestRejected
from guard.reply_stream import ReplyAssembler, StreamError, plan_windows, releasable
from guard.settings import Settings
from stream_app.moderation import Moderator, Planned, RawMessage, unjudged_reason
from stream_app.routing import (
    audited,
    conversation_for,
    fail_closed_verdict,
    output_key,
    verdict_for,
)
from stream_app.triton_client import TooSlow

log = logging.getLogger(__name__)

#: Ended streams remembered per followed stream, so that late chunks are only acked.
TOMBSTONES_PER_STREAM = 4

StreamKey = tuple[str | None, str]


@dataclass
class ReplyStream:
    """What the worker holds of one stream until its last verdict."""

    key: StreamKey
    conversation_id: str
    policy_id: str | None
    timestamp: str
    assembler: ReplyAssembler
    #: When the stream was opened, and when it last made progress (a new chunk).
    opened: float
    last_seen: float
    #: Digest of chunk 0, which tells a stream read again from one reusing its id.
    first_digest: bytes = b""
    context: tuple[Turn, ...] | None = None
    turn_index: int | None = None
    #: Windows judged safe, in order, and the characters a hold-back client may show.
    judged: int = 0
    released: int = 0
    #: The chunk records to ack once the stream has its last verdict.
    held: list[Any] = field(default_factory=list)
    last_msg: RawMessage | None = None
    #: Why the stream cannot be judged whole (its chunks contradict each other...).
    broken: str | None = None
    abandoned: bool = False
    #: Its task, and whether chunks came since that task last looked; ``done``: the
    #: stream has its last verdict.
    task: asyncio.Future[None] | None = None
    dirty: bool = False
    done: bool = False

    @property
    def stream_id(self) -> str:
        return self.key[1]

    def turn(self, content: str) -> ChatTurn:
        """The reply (or a window of it) as a chat turn of its conversation."""
        context = self.context or ()
        return ChatTurn(
            event_id=self.stream_id,
            conversation_id=self.conversation_id,
            turn_index=len(context) if self.turn_index is None else self.turn_index,
            role=Role.AGENT,
            content=content,
            timestamp=self.timestamp,
            tenant=self.key[0],
            policy_id=self.policy_id,
            context=context,
        )


def window_verdict(
    stream: ReplyStream,
    index: int,
    span: tuple[int, int],
    basis: str,
    result: Classification,
    released: int,
) -> ReplyVerdict:
    """The verdict of window ``index`` (characters ``span`` of the reply, judged on
    ``basis``: a digest of what the model saw); unsafe means stop."""
    a = result.answer
    unsafe = a.unsafe
    return ReplyVerdict(
        verdict_id=verdict_id(
            stream.stream_id,
            result.model_name,
            result.model_version,
            a.policy,
            f"{stream.key[0] or ''}|{basis}",
        ),
        stream_id=stream.stream_id,
        conversation_id=stream.conversation_id,
        window=index,
        start=span[0],
        end=span[1],
        verdict=Decision.UNSAFE if unsafe else Decision.SAFE,
        p_unsafe=round(a.p_unsafe, 6),
        categories=a.categories,
        stop=unsafe,
        final=False,
        released=released,
        policy=a.policy,
        model_name=result.model_name,
        model_version=result.model_version,
        decided_at=now_rfc3339(),
        tenant=stream.key[0],
    )


def last_verdict(stream: ReplyStream, verdict: VerdictEvent, text: str, stop: bool) -> ReplyVerdict:
    """The stream's last reply verdict, from its verdict on the verdicts topic: ``stop``
    (nothing more may be shown) or final (the whole reply judged: all of it may be
    shown when safe)."""
    unsafe = verdict.verdict is Decision.UNSAFE
    return ReplyVerdict(
        verdict_id=verdict_id(
            stream.stream_id,
            verdict.model_name,
            verdict.model_version,
            verdict.policy,
            f"{stream.key[0] or ''}|{'stop' if stop else 'final'}:{verdict.verdict_id}",
        ),
        stream_id=stream.stream_id,
        conversation_id=stream.conversation_id,
        window=stream.judged,
        start=0,
        end=len(text),
        verdict=verdict.verdict,
        p_unsafe=verdict.p_unsafe,
        categories=verdict.categories,
        stop=stop or unsafe,
        final=not stop,
        released=len(text) if not (stop or unsafe) else stream.released,
        policy=verdict.policy,
        model_name=verdict.model_name,
        model_version=verdict.model_version,
        decided_at=now_rfc3339(),
        tenant=stream.key[0],
        fail_closed=verdict.fail_closed,
    )


def _chunk_digest(chunk: ReplyChunk) -> bytes:
    """What tells chunk 0 of one reply from chunk 0 of another under the same id."""
    return hashlib.sha256(chunk.to_json()).digest()


def _digest(turns: Sequence[Turn]) -> str:
    h = hashlib.sha256()
    for t in turns:
        h.update(t.role.value.encode() + b"\x00" + t.content.encode("utf-8", "surrogatepass"))
        h.update(b"\x01")
    return h.hexdigest()


class ReplyModerator:
    """Follows streamed replies and judges them window by window (module docstring)."""

    def __init__(
        self,
        settings: Settings,
        moderator: Moderator,
        ack: Callable[[Any], Awaitable[object]],
        on_error: Callable[[BaseException], Awaitable[object]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.s = settings
        self.moderator = moderator
        self.ack = ack
        self.on_error = on_error
        self.clock = clock
        self.streams: dict[StreamKey, ReplyStream] = {}
        #: Streams that have their last verdict: the digest of their chunk 0.
        self.ended: OrderedDict[StreamKey, bytes] = OrderedDict()
        self._tasks: set[asyncio.Future[None]] = set()
        self._requests = asyncio.Semaphore(settings.worker.max_in_flight)

    async def take(self, batch: Sequence[tuple[RawMessage, Any]]) -> None:
        """Take one batch of chunk records (with the handle to ack each by), in arrival
        order, and return: each stream touched is judged by a task of its own, so that
        one slow stream never holds back the others."""
        touched: dict[StreamKey, ReplyStream] = {}
        for msg, handle in batch:
            self.moderator.metrics.chunks_in.inc()
            try:
                chunk = decode_reply_chunk(msg.value, self.s.streams.max_chunk_bytes)
            except InvalidInput as exc:
                sent = await self.moderator.dead_letter(msg, str(exc), "malformed_chunk")
                await sent
                await self.ack(handle)
                continue
            key: StreamKey = (chunk.tenant, chunk.stream_id)
            if key in self.ended:
                if chunk.chunk_index != 0 or _chunk_digest(chunk) == self.ended[key]:
                    await self.ack(handle)  # the stream already has its last verdict
                    continue
                del self.ended[key]  # a new reply under an id already used: refused below
                reused = True
            else:
                reused = False
            stream = self.streams.get(key) or self._open(key, chunk, msg)
            if reused:
                stream.broken = "stream_id already used by an earlier reply"
                stream.first_digest = _chunk_digest(chunk)
            stream.held.append(handle)
            stream.last_msg = msg
            if len(stream.held) > self.s.streams.max_chunks and stream.broken is None:
                stream.broken = f"over {self.s.streams.max_chunks} chunks"
            if stream.broken is None:
                try:
                    if self._add(stream, chunk):
                        stream.last_seen = self.clock()  # a repeat is no sign of life
                except StreamError as exc:
                    stream.broken = str(exc)
            touched[key] = stream
        for stream in touched.values():
            self._kick(stream)

    async def expire(self) -> int:
        """Fail closed every unfinished stream with no new chunk for ``streams.idle_s``
        or open for ``streams.max_duration_s``; how many."""
        idle = [st for st in self.streams.values() if self._stale(st)]
        for stream in idle:
            stream.abandoned = True
            self._kick(stream)
        return len(idle)

    def _stale(self, stream: ReplyStream) -> bool:
        now, st = self.clock(), self.s.streams
        return not stream.assembler.complete and (
            now - stream.last_seen >= st.idle_s or now - stream.opened >= st.max_duration_s
        )

    def forget_partitions(self, partitions: set[tuple[str, int]]) -> int:
        """Drop, without a verdict, the streams read from ``partitions`` (taken away in
        a rebalance: their new owner reads them again); how many."""
        gone = [
            st
            for st in self.streams.values()
            if st.last_msg is not None and (st.last_msg.topic, st.last_msg.partition) in partitions
        ]
        for stream in gone:
            stream.done = True
            if stream.task is not None:
                stream.task.cancel()
            self.streams.pop(stream.key, None)
        self.moderator.metrics.streams_open.set(len(self.streams))
        return len(gone)

    def _kick(self, stream: ReplyStream) -> None:
        """Make sure the stream's task runs (again) over what it now holds."""
        stream.dirty = True
        if stream.task is None or stream.task.done():
            stream.task = asyncio.ensure_future(self._pump(stream))
            self._tasks.add(stream.task)
            stream.task.add_done_callback(self._tasks.discard)

    async def _pump(self, stream: ReplyStream) -> None:
        try:
            while stream.dirty and not stream.done:
                stream.dirty = False
                if stream.broken is not None:
                    await self._fail(stream, FailClosed.STREAM_BROKEN, stream.broken)
                elif stream.abandoned and self._stale(stream):
                    await self._fail(stream, FailClosed.STREAM_ABANDONED, "no chunk for too long")
                else:
                    await self._advance(stream)
        except asyncio.CancelledError:
            raise  # its partition was taken away
        except Exception as exc:  # a bug, not bad input: the worker stops
            log.exception("streamed reply moderation failed")
            await self.on_error(exc)

    def _open(self, key: StreamKey, chunk: ReplyChunk, msg: RawMessage) -> ReplyStream:
        stream = ReplyStream(
            key=key,
            conversation_id=chunk.conversation_id,
            policy_id=chunk.policy_id,
            timestamp=chunk.timestamp,
            assembler=ReplyAssembler(
                self.s.worker.max_content_bytes, self.s.streams.max_pending_chunks
            ),
            opened=self.clock(),
            last_seen=self.clock(),
            last_msg=msg,
        )
        if len(self.streams) >= self.s.streams.max_streams:
            # Refused, not stored for long: its task fails it closed at once. Streams
            # already followed go on.
            stream.broken = f"over {self.s.streams.max_streams} streams followed at once"
        self.streams[key] = stream
        self.moderator.metrics.streams_open.set(len(self.streams))
        return stream

    def _add(self, stream: ReplyStream, chunk: ReplyChunk) -> bool:
        """Add ``chunk``; True unless it repeats one already taken."""
        if (chunk.conversation_id, chunk.policy_id) != (stream.conversation_id, stream.policy_id):
            raise StreamError("conversation_id or policy_id differs between chunks")
        new = not stream.assembler.has(chunk.chunk_index)
        stream.assembler.add(chunk.chunk_index, chunk.delta, chunk.final)
        if chunk.chunk_index == 0 and not stream.first_digest:
            stream.context, stream.turn_index = chunk.context, chunk.turn_index
            stream.timestamp = chunk.timestamp
            stream.first_digest = _chunk_digest(chunk)
        return new

    async def _advance(self, stream: ReplyStream) -> None:
        """Judge the windows that are complete, in order; then the whole reply if it is.

        A window judged safe lets a hold-back client show the reply up to where the
        next window starts; once the reply is complete, the rest waits for the whole
        reply's verdict. A complete reply of one window is judged once, as the whole."""
        a, st = stream.assembler, self.s.streams
        if a.next_index == 0:
            return  # chunk 0 (with the context) has not arrived yet
        text, complete = a.text, a.complete
        windows = plan_windows(text, complete, st.window_tokens, st.overlap_tokens, stream.judged)
        if complete and stream.judged == 0 and len(windows) <= 1:
            windows = []  # the whole reply is one window: judged once, below
        for w in windows:
            turn = stream.turn(text[w.start : w.end])
            turns = conversation_for(
                turn, (), self.s.worker.max_context_turns, self.s.worker.max_context_chars
            )
            req = ClassifyRequest(turns, Role.AGENT, stream.policy_id or "")
            async with self._requests:
                try:
                    result = await self.moderator.client.classify(req, retry_forever=True)
                except (RequestRejected, TooSlow) as exc:
                    await self._fail(stream, unjudged_reason(exc), str(exc))
                    return
            basis = f"window:{_digest(turns)}"
            if result.answer.unsafe:
                stop = window_verdict(
                    stream, w.index, (w.start, w.end), basis, result, stream.released
                )
                await self._stop(stream, stop, turn, turns[:-1], result, text)
                return
            stream.judged += 1
            if not complete:
                shown = releasable(
                    text,
                    False,
                    st.window_tokens,
                    st.overlap_tokens,
                    stream.judged,
                    st.release_lag_windows,
                )
                stream.released = max(stream.released, shown)
            verdict = window_verdict(
                stream, w.index, (w.start, w.end), basis, result, stream.released
            )
            await self._send_reply_verdict(stream, verdict)
        if complete:
            await self._finish(stream, text)

    async def _finish(self, stream: ReplyStream, text: str) -> None:
        """The whole reply, judged as a turn: the verdicts topic, then the final reply
        verdict, then the acks."""
        turn = stream.turn(text)
        if not text.strip():
            await self._fail(stream, FailClosed.STREAM_BROKEN, "the reply is empty")
            return
        turns = conversation_for(
            turn, (), self.s.worker.max_context_turns, self.s.worker.max_context_chars
        )
        too_large = len(text.encode("utf-8", "surrogatepass")) > self.s.worker.max_content_bytes
        planned = Planned(
            self._msg(stream),
            turn,
            turns,
            fail_closed=FailClosed.TOO_LARGE if too_large else None,
        )
        verdict, sends = await self.moderator.judge(planned)
        assert verdict is not None
        await asyncio.gather(*sends)
        await self._send_reply_verdict(stream, last_verdict(stream, verdict, text, stop=False))
        await self._end(stream)

    async def _stop(
        self,
        stream: ReplyStream,
        stop: ReplyVerdict,
        window: ChatTurn,
        context: tuple[Turn, ...],
        result: Classification,
        text: str,
    ) -> None:
        """An unsafe window: the stop verdict first (the client stops showing the reply
        at once), then the stream's verdict on what arrived, to review."""
        await self._send_reply_verdict(stream, stop)
        band = (self.s.policy.review_band_low, self.s.policy.review_band_high)
        audit = audited(window, self.s.policy.audit_rate, self.moderator.audit_key)
        verdict = verdict_for(stream.turn(text), result, context, band, audit)
        planned = Planned(self._msg(stream), stream.turn(text), (*context, Turn(Role.AGENT, text)))
        sends = await self.moderator.deliver(planned, verdict, context)
        await asyncio.gather(*sends)
        await self._end(stream)

    async def _fail(self, stream: ReplyStream, reason: FailClosed, why: str) -> None:
        """Not judged whole: stop, and an unsafe fail-closed verdict to review.

        A stream whose chunk 0 never came (the tail of a reply read again after a
        restart, whose head was committed with its verdict; or a head lost to the
        dead-letter topic) gets the stop only: there is no reply to review, and the
        reply it belongs to may have its verdict already."""
        self.moderator.metrics.streams_failed.labels(reason.value).inc()
        text = stream.assembler.text
        turn = stream.turn(text)
        if not stream.assembler.has(0):
            model, policy = self.s.triton.model_name, self.moderator.fail_closed_policy
            verdict = fail_closed_verdict(turn, reason, model, policy)
            log.warning("stream %s without chunk 0: %s", stream.stream_id[:80], why[:200])
        else:
            planned = Planned(self._msg(stream), turn, error=why, fail_closed=reason)
            judged, sends = await self.moderator.judge(planned)
            assert judged is not None
            verdict = judged
            await asyncio.gather(*sends)
        await self._send_reply_verdict(stream, last_verdict(stream, verdict, text, stop=True))
        await self._end(stream)

    async def _send_reply_verdict(self, stream: ReplyStream, verdict: ReplyVerdict) -> None:
        if verdict.stop:
            self.moderator.metrics.streams_stopped.inc()
        key = output_key(stream.stream_id.encode("utf-8", "surrogatepass"))
        sent = await self.moderator.send(self.s.topics.reply_verdicts, key, verdict.to_json())
        await sent

    async def _end(self, stream: ReplyStream) -> None:
        """The stream has its last verdict on the broker: free it, then ack its chunks
        (a chunk that arrives from now on is acked as it comes)."""
        stream.done = True
        self.streams.pop(stream.key, None)
        self.ended[stream.key] = stream.first_digest
        while len(self.ended) > self.s.streams.max_streams * TOMBSTONES_PER_STREAM:
            self.ended.popitem(last=False)
        self.moderator.metrics.streams_open.set(len(self.streams))
        held, stream.held = stream.held, []
        for handle in held:
            await self.ack(handle)

    @staticmethod
    def _msg(stream: ReplyStream) -> RawMessage:
        assert stream.last_msg is not None
        return stream.last_msg
