"""The review console as a child process (local runs and tests)."""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path

from guard.settings import Settings
from stream_app.launchers.process import ManagedProcess


def console_ready(host: str, port: int) -> bool:
    """True once the console's /readyz says it has read the flagged and reviews topics."""
    with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=2) as r:
        return bool(r.status == 200)


def console_env(s: Settings) -> dict[str, str]:
    """The console's environment: the settings and the reviewers' signing keys (it signs
    each decision as the signed-in reviewer); not the model-control key."""
    env = {**os.environ, **s.to_env()}
    env.pop("GUARDSTREAM_TRITON__MODEL_CONTROL_KEY", None)
    if s.review.reviewer_keys:
        keys = {r: k.get_secret_value() for r, k in s.review.reviewer_keys.items()}
        env["GUARDSTREAM_REVIEW__REVIEWER_KEYS"] = json.dumps(keys)
    return env


def console_process(s: Settings, log_path: Path, timeout_s: float = 60.0) -> ManagedProcess:
    """``guardstream console`` with the settings ``s`` passed through its environment."""
    return ManagedProcess(
        "review console",
        [sys.executable, "-m", "guardstream_cli.main", "console"],
        ready=lambda: console_ready(s.console.host, s.console.port),
        log_path=log_path,
        env=console_env(s),
        timeout_s=timeout_s,
    )
