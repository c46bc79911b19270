"""The moderation worker as a child process (local runs, benchmarks, tests)."""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from guard.settings import Settings
from stream_app.launchers.process import ManagedProcess


def worker_ready(port: int) -> bool:
    """True once the worker's /readyz says its Triton model is ready."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
        return bool(r.status == 200)


def worker_env(s: Settings) -> dict[str, str]:
    """The worker's environment: the settings, less the model-control key (the worker
    reads untrusted input; only retrain and rollback may load models)."""
    env = {**os.environ, **s.to_env()}
    env.pop("GUARDSTREAM_TRITON__MODEL_CONTROL_KEY", None)
    return env


def worker_process(s: Settings, log_path: Path, timeout_s: float = 120.0) -> ManagedProcess:
    """``guardstream worker`` with the settings ``s`` passed through its environment."""
    return ManagedProcess(
        "worker",
        [sys.executable, "-m", "guardstream_cli.main", "worker"],
        ready=lambda: worker_ready(s.worker.web_port),
        log_path=log_path,
        env=worker_env(s),
        timeout_s=timeout_s,
        stop_timeout_s=20,
    )
