"""Promotion and rollback reach every Triton replica, not one behind a Service.

Two real tritonservers share one model repository, as the chart's Triton replicas share
the model claim, in explicit model-control mode with the model-control key as the chart
runs them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path

import orjson
import pytest

from guard.checkpoints import build_tiny_llama
from guard.conversation import Role, Turn
from guard.prompt import PromptFormat
from guard.protocol import ClassifyRequest
from guard.settings import TritonSettings
from stream_app.launchers.tritonserver import TritonPorts, triton_process
from stream_app.triton_client import GuardClient
from tests.conftest import ROOT, free_port
from training import promote

pytestmark = pytest.mark.integration

KEY = "test-model-control-key"


def _served_version(url: str) -> str:
    async def run() -> str:
        async with GuardClient(TritonSettings(url=url)) as c:
            await c.wait_ready(60)
            r = await c.classify(ClassifyRequest((Turn(Role.USER, "hello"),), Role.USER))
            return r.model_version

    return asyncio.run(run())


def test_promotion_and_rollback_reach_every_replica_and_a_missed_one_is_reported(
    tiny_lg1: Path, llama3_tokenizer_dir: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "model_repo"
    shutil.copytree(ROOT / "model_repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    model_dir = repo / "guard"
    candidate = build_tiny_llama(
        tmp_path / "candidate", llama3_tokenizer_dir, seed=9, answer_only_head=PromptFormat.LG1
    )
    env = {"GUARDSTREAM_MODEL_CHECKPOINT": str(tiny_lg1)}  # version 1's weights
    restricted = [
        f"--grpc-restricted-protocol=model-repository:{promote.MODEL_CONTROL_HEADER}={KEY}",
        f"--http-restricted-api=model-repository:{promote.MODEL_CONTROL_HEADER}={KEY}",
    ]
    ports = [TritonPorts(free_port(), free_port(), free_port()) for _ in range(2)]
    urls = [f"127.0.0.1:{p.grpc}" for p in ports]
    cli_env = {
        **os.environ,
        **env,
        "GUARDSTREAM_LOCAL__MODEL_REPOSITORY": str(repo),
        "GUARDSTREAM_TRITON__CONTROL_URLS": orjson.dumps(urls).decode(),
        "GUARDSTREAM_TRITON__MODEL_CONTROL_KEY": KEY,
    }

    def rollback() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "guardstream_cli.main", "rollback"],
            env=cli_env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    with ExitStack() as stack:
        replicas = [
            stack.enter_context(
                triton_process(
                    repo,
                    tmp_path / f"triton-{i}",
                    p,
                    explicit_models=["guard"],
                    env=env,
                    timeout_s=240,
                    extra_args=restricted,
                )
            )
            for i, p in enumerate(ports)
        ]
        assert [_served_version(u) for u in urls] == ["1", "1"]

        # Promotion: a new version in the shared repository, loaded by every replica.
        assert promote.promote(model_dir, candidate) == 2
        results = promote.reload_replicas(urls, "guard", KEY)
        assert results == {urls[0]: ["2"], urls[1]: ["2"]}
        assert [_served_version(u) for u in urls] == ["2", "2"]

        # Rollback, as an operator runs it: every replica serves version 1 again.
        done = rollback()
        assert done.returncode == 0, done.stdout + done.stderr
        assert all(f"triton {u}: serves versions ['1']" in done.stdout for u in urls)
        assert [_served_version(u) for u in urls] == ["1", "1"]

        # A replica that misses the reload is named and the command fails; the others
        # are reloaded all the same.
        assert promote.promote(model_dir, candidate) == 3  # numbers are never reused
        assert promote.reload_replicas(urls, "guard", KEY) == {u: ["3"] for u in urls}
        replicas[1].stop()
        done = rollback()
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"triton {urls[0]}: serves versions ['1']" in done.stdout
        assert f"triton {urls[1]}: " in done.stdout
        assert "1 of 2 Triton replicas did not load the model" in done.stderr
        assert _served_version(urls[0]) == "1"
