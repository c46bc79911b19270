"""Topic names and their creation (before any worker starts)."""

from __future__ import annotations

import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from guard.settings import Settings
from stream_app.kafka_config import aiokafka_options

log = logging.getLogger(__name__)


def topic_configs(s: Settings) -> dict[str, str]:
    """Per-topic configuration of the topics guardstream creates."""
    n = s.topics.min_insync_replicas
    return {} if n is None else {"min.insync.replicas": str(n)}


def topic_names(s: Settings) -> list[str]:
    t = s.topics
    return [t.input, t.verdicts, t.flagged, t.dlq, t.reviews]


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
