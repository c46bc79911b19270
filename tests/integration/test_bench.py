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


def test_bench_stream_reports_every_number_it_promises(tmp_path: Path) -> None:
    """``guardstream bench-stream`` on the shipped model (what the docs' numbers come
    from), at a small size."""
    report = tmp_path / "stream.json"
    env = {k: v for k, v in os.environ.items() if k != "GUARDSTREAM_MODEL_CHECKPOINT"}
    env["GUARDSTREAM_LOCAL__DATA_DIR"] = str(tmp_path)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "guardstream_cli.main",
            "bench-stream",
            "--replies",
            "3",
            "--rate",
            "200",
            "--report",
            str(report),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode in (0, 1), out.stdout[-2000:] + out.stderr[-3000:]
    r = orjson.loads(report.read_bytes())
    assert "shipped default model" in r["model"]
    assert r["safe"]["replies"] == 3 and r["unsafe"]["unsafe_replies"] == 3
    for key in ("window_verdict_delay_p50_ms", "chunk_added_latency_p50_ms", "first_shown_p50_s"):
        assert r["safe"][key] > 0, key
    assert 0 <= r["unsafe"]["unsafe_any_harm_shown_share"] <= 1
    # exit 1 exactly when a stopped reply had shown harm (the mechanism's target is 0)
    assert (out.returncode == 1) == (r["unsafe"]["unsafe_harm_shown_when_stopped"] > 0)
    assert r["ratio_first_shown_stream_to_baseline"] > 0
    assert "first character shown: streamed" in out.stdout
