"""Builds the faust App from settings (and nothing else)."""

from __future__ import annotations

import faust

from guard.settings import Settings
from stream_app.idle_fetch import install_idle_fetch_backoff
from stream_app.kafka_config import faust_broker


def create_app(s: Settings) -> faust.App:
    urls, credentials = faust_broker(s.kafka)
    install_idle_fetch_backoff(s.kafka.idle_fetch_backoff_ms)
    # faust makes its data dir but not the dirs above it (var/ in a fresh clone when
    # the local stack keeps its own state elsewhere).
    s.worker.data_dir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
        s.worker.app_id,
        broker=urls,
        broker_credentials=credentials,
        processing_guarantee="at_least_once",
        value_serializer="raw",
        key_serializer="raw",
        topic_partitions=s.topics.partitions,
        topic_allow_declare=True,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=s.kafka.max_record_bytes,
        stream_buffer_maxsize=s.worker.read_ahead,
        broker_max_poll_records=s.worker.read_ahead,
        broker_commit_interval=1.0,
        broker_session_timeout=s.worker.session_timeout_s,
        consumer_group_instance_id=s.worker.instance_id(),
        broker_heartbeat_interval=s.worker.session_timeout_s / 3,
        # Longer than one Triton request may take, so that a rebalance waits for the
        # batches in flight instead of expelling their worker.
        broker_rebalance_timeout=max(s.worker.session_timeout_s * 2, s.triton.timeout_s + 10),
        # How long the worker may go without taking new records (its buffers full while
        # slow batches are classified) before the broker counts it gone. A worker counted
        # gone this way does not rejoin (faust/aiokafka; open, see the closing note of
        # issue 17): at 60 s, long turns judged in windows on CPU wedged it.
        broker_max_poll_interval=s.worker.max_poll_interval_s,
        web_enabled=True,
        web_port=s.worker.web_port,
        web_bind=s.worker.web_host,
        web_host=s.worker.web_host,
        datadir=str(s.worker.data_dir),
        store="memory://",
        autodiscover=False,
    )
