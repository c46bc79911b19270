"""Topic names and their creation (before any worker starts)."""

from __future__ import annotations

import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from guard.settings import Settings
from stream_app.kafka_config import aiokafka_options

log = logging.getLogger(__name__)


#: Bytes a record batch adds around one record (Kafka's own defaults differ by 12).
BATCH_OVERHEAD_BYTES = 1024


def topic_configs(s: Settings) -> dict[str, str]:
    """Per-topic configuration of the topics guardstream creates: the broker's size
    limit follows the producers' (``kafka.max_record_bytes``), so a record the
    worker may write is never refused by the broker."""
    out = {"max.message.bytes": str(s.kafka.max_record_bytes + BATCH_OVERHEAD_BYTES)}
    if s.topics.min_insync_replicas is not None:
        out["min.insync.replicas"] = str(s.topics.min_insync_replicas)
    return out


def topic_names(s: Settings) -> list[str]:
    t = s.topics
    return [t.input, t.verdicts, t.flagged, t.dlq, t.reviews, t.reply_chunks, t.reply_verdicts]


async def create_topics(s: Settings) -> list[str]:
    """Create every guardstream topic that does not exist yet; return those created.

    Partition counts must exist before a worker starts: faust otherwise
    auto-creates a 1-partition topic.
    """
    admin = AIOKafkaAdminClient(**aiokafka_options(s.kafka))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in topic_names(s) if n not in existing]
        if wanted:
            with contextlib.suppress(TopicAlreadyExistsError):  # another process won the race
                await admin.create_topics(
                    [
                        NewTopic(
                            n,
                            s.topics.partitions,
                            s.topics.replication_factor,
                            topic_configs=topic_configs(s),
                        )
                        for n in wanted
                    ]
                )
        for n in wanted:
            log.info("created topic %s (%d partitions)", n, s.topics.partitions)
        return wanted
    finally:
        await admin.close()
