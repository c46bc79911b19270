"""Prometheus metrics of the worker (served on /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.turns_in = Counter("guardstream_turns_in", "Chat-turn messages read.", registry=r)
        self.verdicts = Counter(
            "guardstream_verdicts", "Verdicts written.", ["verdict"], registry=r
        )
        self.categories = Counter(
            "guardstream_verdict_categories",
            "Violated categories in unsafe verdicts.",
            ["policy", "code", "name"],
            registry=r,
        )
        self.flagged = Counter(
            "guardstream_flagged", "Turns sent to review, by reason.", ["reason"], registry=r
        )
        self.parse_errors = Counter(
            "guardstream_parse_errors",
            "Model answers that did not parse (treated as unsafe).",
            registry=r,
        )
        self.dead_letters = Counter(
            "guardstream_dead_letters", "Messages sent to the DLQ.", ["kind"], registry=r
        )
        self.batch_size = Histogram(
            "guardstream_batch_size",
            "Turns per batch.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.triton_latency = Histogram(
            "guardstream_triton_latency_seconds",
            "Triton request latency.",
            registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.triton_errors = Counter(
            "guardstream_triton_errors", "Failed Triton attempts (retried).", registry=r
        )
        self.consumer_lag = Gauge(
            "guardstream_consumer_lag",
            "Messages behind the high watermark.",
            ["topic", "partition"],
            registry=r,
        )
        self.chunks_in = Counter(
            "guardstream_reply_chunks_in", "Reply-chunk messages read.", registry=r
        )
        self.streams_open = Gauge(
            "guardstream_reply_streams_open", "Streamed replies being followed.", registry=r
        )
        self.streams_stopped = Counter(
            "guardstream_reply_streams_stopped",
            "Streamed replies stopped (an unsafe window, or failed closed).",
            registry=r,
        )
        self.streams_failed = Counter(
            "guardstream_reply_streams_failed",
            "Streamed replies failed closed, by reason.",
            ["reason"],
            registry=r,
        )
