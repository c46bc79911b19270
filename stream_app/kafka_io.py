"""Producing chat turns and following output topics (``produce``/``follow``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from guard.events import EventError, Unjudgeable, decode_chat_turn
from guard.settings import Settings
from stream_app.idle_fetch import install_idle_fetch_backoff
from stream_app.kafka_config import aiokafka_options


def read_turns(
    path: Path, max_content_bytes: int, max_record_bytes: int
) -> list[tuple[bytes, bytes]]:
    """(key, value) per JSON line; each line must be a valid chat-turn event. A turn
    that is only too large is sent as it is: the worker answers it with a fail-closed
    verdict, as it would answer the application that sent it. A record over the
    topic's size limit cannot be sent at all: that is an error naming the line, before
    anything is sent."""
    out = []
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            turn = decode_chat_turn(line, max_content_bytes)
        except Unjudgeable as exc:
            turn = exc.turn
        except EventError as exc:
            raise EventError(f"{path}:{n}: {exc}") from None
        record = (turn.conversation_id.encode(), turn.to_json())
        if len(record[0]) + len(record[1]) > max_record_bytes:
            raise EventError(
                f"{path}:{n}: the record is {len(record[0]) + len(record[1]):,} bytes, over"
                f" the topic's limit of {max_record_bytes:,}"
                " (GUARDSTREAM_KAFKA__MAX_RECORD_BYTES); nothing was sent"
            )
        out.append(record)
    return out


async def produce(
    s: Settings, records: Iterable[tuple[bytes | None, bytes]], topic: str | None = None
) -> int:
    producer = AIOKafkaProducer(
        **aiokafka_options(s.kafka),
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
        max_request_size=s.kafka.max_record_bytes,
    )
    await producer.start()
    n = 0
    try:
        futures = []
        for key, value in records:
            futures.append(await producer.send(topic or s.topics.input, value=value, key=key))
            n += 1
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n


async def follow(
    s: Settings,
    topic: str,
    count: int | None = None,
    timeout_s: float | None = None,
    from_beginning: bool = True,
) -> AsyncIterator[dict[str, object]]:
    """Yield decoded JSON events from ``topic`` until ``count`` or ``timeout_s``."""
    install_idle_fetch_backoff(s.kafka.idle_fetch_backoff_ms)
    consumer = AIOKafkaConsumer(
        topic,
        **aiokafka_options(s.kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
    )
    await consumer.start()
    seen = 0
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    try:
        while count is None or seen < count:
            wait_ms = 1000
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                wait_ms = int(min(left, 1.0) * 1000)
            batches = await consumer.getmany(timeout_ms=wait_ms, max_records=500)
            for records in batches.values():
                for r in records:
                    yield orjson.loads(r.value) if r.value is not None else {}
                    seen += 1
                    if count is not None and seen >= count:
                        return
    finally:
        await consumer.stop()


async def read_all(s: Settings, topic: str) -> list[bytes]:
    """Every record value of ``topic``, from the beginning to the current end."""
    from aiokafka import TopicPartition

    install_idle_fetch_backoff(s.kafka.idle_fetch_backoff_ms)
    consumer = AIOKafkaConsumer(
        **aiokafka_options(s.kafka), group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if partitions is None:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        values: list[bytes] = []
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                values += [r.value for r in records if r.value is not None]
        return values
    finally:
        await consumer.stop()
