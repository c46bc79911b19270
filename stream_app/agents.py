"""The moderation agent and the worker's web endpoints (thin: logic is elsewhere)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from guard.settings import Settings
from stream_app.metrics import WorkerMetrics
from stream_app.moderation import Moderator, RawMessage
from stream_app.offset_ledger import InOrderAcks
from stream_app.reply_moderation import ReplyModerator
from stream_app.triton_client import GuardClient, ModelMismatch

log = logging.getLogger(__name__)


def _headers(raw: Any) -> tuple[tuple[str, bytes], ...]:
    """A record's headers as (name, value) pairs, whichever form faust gives them in."""
    items = raw.items() if isinstance(raw, dict) else (raw or ())
    return tuple((str(k), bytes(v or b"")) for k, v in items)


def _raw(event: Any) -> RawMessage:
    m = event.message
    return RawMessage(
        m.key, m.value, m.topic, m.partition, m.offset, m.timestamp, _headers(m.headers)
    )


def register(app: faust.App, s: Settings) -> WorkerMetrics:
    """Topics, the moderation agent, start-up checks and web views."""
    metrics = WorkerMetrics()
    input_topic = app.topic(s.topics.input, partitions=s.topics.partitions)
    outputs = {
        name: app.topic(name, partitions=s.topics.partitions)
        for name in (s.topics.verdicts, s.topics.flagged, s.topics.dlq, s.topics.reply_verdicts)
    }
    chunk_topic = app.topic(s.topics.reply_chunks, partitions=s.topics.partitions)
    state: dict[str, Any] = {
        "client": None,
        "moderator": None,
        "replies": None,
        "acks": {},
        "last_ok": time.monotonic(),
        "offsets": {},
    }

    async def send(topic: str, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        return await outputs[topic].send(key=key, value=value)  # type: ignore[return-value]

    def on_retry() -> None:
        metrics.triton_errors.inc()

    @app.task
    async def connect_triton() -> None:
        # Fail fast with a clear message if the model is not the guard protocol;
        # wait (not fail) while Triton is still starting.
        client = GuardClient(s.triton, on_retry=on_retry)
        try:
            meta = await client.wait_ready(timeout_s=10**9)
        except ModelMismatch as exc:
            log.error("%s", exc)
            await app.crash(exc)
            return
        log.info("triton model %s ready (versions %s)", meta.get("name"), meta.get("versions"))
        state["client"] = client
        moderator = Moderator(s, client, send, metrics)
        await moderator.learn_default_policy()
        state["moderator"] = moderator

    @app.agent(input_topic)
    async def moderate(stream: faust.StreamT) -> None:
        while state["moderator"] is None:
            await asyncio.sleep(0.1)
        moderator: Moderator = state["moderator"]
        slots = asyncio.Semaphore(s.worker.max_batches_in_flight)
        tasks: set[asyncio.Task[None]] = set()
        acks = InOrderAcks(stream.ack)  # batches may finish out of order
        state["acks"][s.topics.input] = acks

        async def finish(events: list[Any], planned: list[Any]) -> None:
            try:
                await moderator.run(planned)
                for event in events:  # only now: verdicts and dead letters are durable
                    await acks.done(event)
                state["last_ok"] = time.monotonic()
            except Exception as exc:  # a bug, not bad input: stop, resume from the commit
                log.exception("moderation batch failed; stopping the worker")
                await app.crash(exc)
            finally:
                slots.release()

        batches = stream.noack_take(  # type: ignore[attr-defined]
            s.worker.batch_size, within=s.worker.batch_window_s
        )
        async for events in batches:
            for e in events:
                acks.take(e)
            batch = [_raw(e) for e in events]
            for m in batch:
                state["offsets"][(m.topic, m.partition)] = m.offset
            planned = moderator.plan(batch)
            await slots.acquire()
            task = asyncio.ensure_future(finish(list(events), planned))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    @app.agent(chunk_topic)
    async def moderate_replies(stream: faust.StreamT) -> None:
        """Streamed replies: one batch at a time (a stream's windows are judged in
        order); the chunks are acked by the reply moderator once their stream has its
        last verdict."""
        while state["moderator"] is None:
            await asyncio.sleep(0.1)
        acks = InOrderAcks(stream.ack)  # streams end in any order
        state["acks"][s.topics.reply_chunks] = acks
        replies = ReplyModerator(s, state["moderator"], acks.done, app.crash)
        state["replies"] = replies
        batches = stream.noack_take(  # type: ignore[attr-defined]
            s.worker.batch_size, within=s.worker.batch_window_s
        )
        async for events in batches:
            for e in events:
                acks.take(e)
            batch = [(_raw(e), e) for e in events]
            try:
                await replies.take(batch)
            except Exception as exc:  # a bug, not bad input: stop, resume from the commit
                log.exception("reply moderation failed; stopping the worker")
                await app.crash(exc)
                return

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: set[Any], **kwargs: Any) -> None:
        """Partitions taken away: their open records and streams are another worker's
        now (it reads them again from the last commit); send nothing for them."""
        for tp in revoked:
            acks = state["acks"].get(tp.topic)
            if acks is not None:
                acks.forget(tp.topic, tp.partition)
        replies: ReplyModerator | None = state["replies"]
        if replies is not None:
            replies.forget_partitions({(tp.topic, tp.partition) for tp in revoked})

    @app.timer(interval=min(s.streams.idle_s / 4, 5.0))
    async def expire_streams() -> None:
        replies: ReplyModerator | None = state["replies"]
        if replies is not None:
            n = await replies.expire()
            if n:
                log.warning("%d streamed replies abandoned: failed closed", n)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok", "triton_connected": state["client"] is not None})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        ready = state["client"] is not None
        return web.json({"ready": ready}, status=200 if ready else 503)

    @app.page("/metrics")
    async def metrics_view(web: Any, request: Any) -> Any:
        for (topic, partition), offset in list(state["offsets"].items()):
            tp = faust.types.TP(topic, partition)
            try:
                lag = max(app.consumer.highwater(tp) - offset - 1, 0)
            except Exception:
                continue
            metrics.consumer_lag.labels(topic, str(partition)).set(lag)
        # aiohttp wants the charset out of content_type; Prometheus reads text/plain 0.0.4.
        content_type = CONTENT_TYPE_LATEST.split(";")[0]
        return web.bytes(generate_latest(metrics.registry), content_type=content_type)

    return metrics
