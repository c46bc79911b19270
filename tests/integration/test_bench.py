"""The benchmark command runs end to end and reports every number it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def test_bench_reports_all_measurements_and_ratios(tiny_lg1: Path, tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    env = {
        **os.environ,
        "GUARDSTREAM_MODEL_CHECKPOINT": str(tiny_lg1),
        "GUARDSTREAM_LOCAL__DATA_DIR": str(tmp_path),
    }
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "guardstream_cli.main",
            "bench",
            "--turns",
            "64",
            "--report",
            str(report),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    r = orjson.loads(report.read_bytes())
    for key in (
        "model_only_tps",
        "triton_tps",
        "e2e_tps",
        "naive_tps",
        "e2e_p50_ms",
        "e2e_p99_ms",
        "worker_peak_rss_mb",
        "triton_peak_rss_mb",
    ):
        assert r[key] > 0, key
    assert r["e2e_p50_ms"] <= r["e2e_p99_ms"]
    assert r["ratio_e2e_to_model_only"] == pytest.approx(r["e2e_tps"] / r["model_only_tps"])
    assert "ratios: e2e/model-only" in out.stdout
