"""Helpers for stream tests: isolated settings, a worker process, event collection."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterable
from pathlib import Path

from guard.conversation import Role
from guard.events import ChatTurn, now_rfc3339
from guard.settings import Settings
from stream_app.kafka_io import follow, produce
from stream_app.launchers.process import ManagedProcess
from tests.conftest import free_port


def isolated_settings(broker: str, triton_grpc: str, data_dir: Path, **worker: object) -> Settings:
    """Settings with topics, consumer group and ports of their own, and no audit sample
    (tests that assert which turns go to review need it deterministic: a 1% draw once
    sent a plain turn there; the audit sample has tests of its own); everything else is
    the default a user runs with."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        kafka={"brokers": broker},
        topics={
            "input": f"turns-{tag}",
            "verdicts": f"verdicts-{tag}",
            "flagged": f"flagged-{tag}",
            "dlq": f"dlq-{tag}",
            "reviews": f"reviews-{tag}",
            "reply_chunks": f"chunks-{tag}",
            "reply_verdicts": f"reply-verdicts-{tag}",
            "partitions": 3,
        },
        worker={
            "app_id": f"gs-test-{tag}",
            "web_port": free_port(),
            "data_dir": data_dir / "worker",
            "batch_size": 16,
            "batch_window_s": 0.05,
            **worker,
        },
        triton={"url": triton_grpc, "backoff_initial_s": 0.2, "backoff_max_s": 1.0},
        policy={"audit_rate": 0.0},
    )  # type: ignore[arg-type]


def up_environment(data_dir: Path, checkpoint: Path) -> tuple[dict[str, str], dict[str, int]]:
    """The environment of a ``guardstream up`` run that serves ``checkpoint`` and meets no
    other stack (its own data dir and free ports), and those ports by name."""
    ports = {k: free_port() for k in ("broker", "http", "grpc", "metrics", "web", "console")}
    env = {
        **os.environ,
        "GUARDSTREAM_LOCAL__DATA_DIR": str(data_dir),
        "GUARDSTREAM_LOCAL__BROKER_PORT": str(ports["broker"]),
        "GUARDSTREAM_LOCAL__TRITON_HTTP_PORT": str(ports["http"]),
        "GUARDSTREAM_LOCAL__TRITON_GRPC_PORT": str(ports["grpc"]),
        "GUARDSTREAM_LOCAL__TRITON_METRICS_PORT": str(ports["metrics"]),
        "GUARDSTREAM_WORKER__WEB_PORT": str(ports["web"]),
        "GUARDSTREAM_CONSOLE__PORT": str(ports["console"]),
        "GUARDSTREAM_MODEL_CHECKPOINT": str(checkpoint),
    }
    return env, ports


def worker_process(s: Settings, log_path: Path) -> ManagedProcess:
    from stream_app.launchers.worker import worker_process as launch

    return launch(s, log_path)


def make_turns(n: int, conversations: int = 5, tag: str = "") -> list[ChatTurn]:
    """n turns over a few conversations, alternating user and agent."""
    tag = tag or uuid.uuid4().hex[:6]
    out = []
    for i in range(n):
        conv, idx = f"c{i % conversations}-{tag}", i // conversations
        role = Role.USER if idx % 2 == 0 else Role.AGENT
        out.append(
            ChatTurn(
                event_id=f"e{i}-{tag}",
                conversation_id=conv,
                turn_index=idx,
                role=role,
                content=f"message {i} about {'bread ' * (i % 7)}",
                timestamp=now_rfc3339(),
            )
        )
    return out


def send_turns(s: Settings, turns: Iterable[ChatTurn]) -> None:
    asyncio.run(produce(s, [(t.conversation_id.encode(), t.to_json()) for t in turns]))


def send_raw(s: Settings, records: Iterable[tuple[bytes | None, bytes | None]]) -> None:
    asyncio.run(produce(s, records))  # type: ignore[arg-type]


def collect(
    s: Settings, topic: str, count: int | None, timeout_s: float
) -> list[dict[str, object]]:
    async def run() -> list[dict[str, object]]:
        return [e async for e in follow(s, topic, count, timeout_s)]

    return asyncio.run(run())
