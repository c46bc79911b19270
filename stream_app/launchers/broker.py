"""A local Kafka-protocol broker for local runs and tests: noida-db (PyPI).

Production points ``GUARDSTREAM_KAFKA__BROKERS`` at a real Kafka cluster;
nothing else in guardstream knows which broker it talks to. Data lives in
``data_dir`` and survives a clean restart.
"""

from __future__ import annotations

import shutil
import socket
import sys
from pathlib import Path

from stream_app.launchers.process import ManagedProcess, StartupError


def _binary() -> str:
    exe = Path(sys.executable).parent / "noida-db"
    if exe.exists():
        return str(exe)
    found = shutil.which("noida-db")
    if not found:
        raise StartupError("noida-db is not installed: run scripts/setup.sh")
    return found


def kafka_ready(port: int) -> bool:
    """True once the broker answers a metadata request."""
    with socket.create_connection(("127.0.0.1", port), timeout=1):
        pass
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def probe() -> bool:
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}", request_timeout_ms=2000)
        await admin.start()
        try:
            await admin.list_topics()
            return True
        finally:
            await admin.close()

    return asyncio.run(probe())


def broker_process(data_dir: Path, port: int, timeout_s: float = 60.0) -> ManagedProcess:
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        _binary(),
        "start",
        "--data-dir",
        str(data_dir.resolve()),
        "--only",
        "kafka",
        "--kafka-port",
        str(port),
    ]
    return ManagedProcess(
        "kafka broker (noida-db)",
        argv,
        ready=lambda: kafka_ready(port),
        log_path=data_dir / "broker.log",
        timeout_s=timeout_s,
    )
