"""The console's Kafka side (thin): follow the flagged and reviews topics into the
queue, and write decisions to the reviews topic.

The queue's state is the two topics, read from the beginning at every start (no
consumer group: every console replica reads everything) and kept in memory. A review
whose signature does not hold, where the deployment has reviewer keys, closes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from guard.events import EventError, ReviewEvent, decode_review
from guard.settings import Settings
from review_console.queue import ReviewQueue
from stream_app.idle_fetch import install_idle_fetch_backoff
from stream_app.kafka_config import aiokafka_options

log = logging.getLogger(__name__)


class Follower:
    """Reads the flagged and reviews topics into ``queue``; ``caught_up`` is set once it
    has read what the topics held when it started."""

    def __init__(self, s: Settings, queue: ReviewQueue, signing_keys: Mapping[str, bytes]) -> None:
        self.s, self.queue, self.keys = s, queue, signing_keys
        self.caught_up = asyncio.Event()
        self.unsigned = 0

    async def run(self) -> None:
        install_idle_fetch_backoff(self.s.kafka.idle_fetch_backoff_ms)
        consumer = AIOKafkaConsumer(
            **aiokafka_options(self.s.kafka), group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            tps = await self._partitions(consumer)
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=1000)
                for tp, records in batches.items():
                    for r in records:
                        self._apply(tp.topic, r.value, r.timestamp / 1000)
                if not self.caught_up.is_set() and all(
                    await asyncio.gather(*(self._at(consumer, tp, ends[tp]) for tp in tps))
                ):
                    self.caught_up.set()
        finally:
            await consumer.stop()

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        topics = (self.s.topics.flagged, self.s.topics.reviews)
        for _ in range(60):
            found = {t: consumer.partitions_for_topic(t) for t in topics}
            if all(found.values()):
                return [TopicPartition(t, p) for t in topics for p in sorted(found[t] or ())]
            await consumer._client.force_metadata_update()
            await asyncio.sleep(1)
        raise RuntimeError(f"topics {', '.join(topics)} not found: create them first")

    @staticmethod
    async def _at(consumer: AIOKafkaConsumer, tp: TopicPartition, end: int) -> bool:
        return bool(await consumer.position(tp) >= end)

    def _apply(self, topic: str, raw: bytes | None, at: float) -> None:
        if topic == self.s.topics.flagged:
            try:
                record = orjson.loads(raw or b"")
            except orjson.JSONDecodeError:
                return
            if isinstance(record, dict):
                self.queue.add_flagged(record, at)
            return
        try:
            review = decode_review(raw)
        except EventError:
            return
        if self.keys:
            key = self.keys.get(review.reviewer)
            if key is None or not review.signed_by(key):
                self.unsigned += 1
                return
        self.queue.add_review(review, at)


class Publisher:
    """Writes reviews to the reviews topic (keyed by flagged id), acknowledged by every
    in-sync replica before it returns."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(
            **aiokafka_options(self.s.kafka), acks="all", enable_idempotence=True
        )
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def __call__(self, review: ReviewEvent) -> None:
        if self.producer is None:
            raise RuntimeError("the publisher is not started")
        await self.producer.send_and_wait(
            self.s.topics.reviews, value=review.to_json(), key=review.flagged_id.encode()
        )
