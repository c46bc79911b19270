"""The guardstream command as a user runs it."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT
from tests.streaming import isolated_settings, make_turns, up_environment

pytestmark = pytest.mark.integration
CLI = [sys.executable, "-m", "guardstream_cli.main"]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_runs_everything_shows_each_sample_verdict_and_stops_what_it_started(
    tiny_lg1: Path, tmp_path: Path
) -> None:
    env, ports = up_environment(tmp_path, tiny_lg1)
    out = subprocess.run(
        [*CLI, "up", "--exit-after-samples"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "sent 10 sample turns" in out.stdout
    verdict_lines = re.findall(
        r"^(SAFE|UNSAFE) +p=\d\.\d{3} (user |agent) demo-", out.stdout, re.MULTILINE
    )
    assert len(verdict_lines) == 10, out.stdout
    assert {role.strip() for _, role in verdict_lines} == {"user", "agent"}
    # and the sample replies streamed through the worker, each with its last verdict
    streamed = re.findall(r"^(SAFE|UNSAFE|STOPPED) streamed reply (\w+)", out.stdout, re.MULTILINE)
    assert sorted(name for _, name in streamed) == ["bomb", "leaf"], out.stdout
    assert f"checkpoint {tiny_lg1}" in out.stdout  # the served model is named
    console = f"review console: http://127.0.0.1:{ports['console']}/ (sign in as reviewer, password"
    assert console in out.stdout
    for name, port in ports.items():
        assert not _port_open(port), f"{name} port {port} still open after up exited"


def test_produce_then_follow(kafka_broker: str, tmp_path: Path) -> None:
    s = isolated_settings(kafka_broker, "127.0.0.1:1", tmp_path)
    turns = make_turns(7)
    path = tmp_path / "turns.jsonl"
    path.write_bytes(b"\n".join(t.to_json() for t in turns) + b"\n")
    env = {**os.environ, **s.to_env()}
    subprocess.run([*CLI, "topics", "create"], env=env, cwd=ROOT, check=True, timeout=60)
    subprocess.run([*CLI, "produce", str(path)], env=env, cwd=ROOT, check=True, timeout=60)
    out = subprocess.run(
        [*CLI, "follow", "--topic", "input", "--count", "7", "--timeout", "30"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        check=True,
        timeout=60,
    )
    events = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert sorted(e["event_id"] for e in events) == sorted(t.event_id for t in turns)


def test_produce_refuses_a_bad_file_with_its_line_number(kafka_broker: str, tmp_path: Path) -> None:
    s = isolated_settings(kafka_broker, "127.0.0.1:1", tmp_path)
    path = tmp_path / "bad.jsonl"
    path.write_bytes(make_turns(1)[0].to_json() + b'\n{"schema_version": 1}\n')
    out = subprocess.run(
        [*CLI, "produce", str(path)],
        env={**os.environ, **s.to_env()},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert f"{path}:2: missing field 'event_id'" in out.stderr


def test_review_in_the_terminal_records_decisions_on_the_reviews_topic(
    kafka_broker: str, tmp_path: Path
) -> None:
    from guard.events import decode_review
    from stream_app.kafka_io import produce, read_all
    from tests.unit.test_dataset import flagged

    s = isolated_settings(kafka_broker, "127.0.0.1:1", tmp_path)
    asyncio.run(
        produce(s, [(None, flagged(f)) for f in ("f1", "f2", "f3")], topic=s.topics.flagged)
    )
    out = subprocess.run(
        [*CLI, "review", "--reviewer", "ann"],
        input="u O3\nbogus\ns\nq\n",
        env={**os.environ, **s.to_env()},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "3 flagged turns to review" in out.stdout and "not understood" in out.stdout
    reviews = [decode_review(r) for r in asyncio.run(read_all(s, s.topics.reviews))]
    assert [(r.flagged_id, r.label.value, r.categories, r.reviewer) for r in reviews] == [
        ("f1", "unsafe", ("O3",), "ann"),
        ("f2", "safe", (), "ann"),
    ]
    assert not any(r.signature for r in reviews)  # no key configured: unsigned

    # A reviewer configured with a key: its id comes from the configuration, whatever
    # the command line says, and every decision is signed with its key.
    signed = subprocess.run(
        [*CLI, "review", "--reviewer", "mallory"],
        input="u O3\nq\n",
        env={
            **os.environ,
            **s.to_env(),
            "GUARDSTREAM_REVIEW__REVIEWER": "bob",
            "GUARDSTREAM_REVIEW__KEY": "bob-key-0123456789",
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert signed.returncode == 0, signed.stderr[-2000:]
    (last,) = [decode_review(r) for r in asyncio.run(read_all(s, s.topics.reviews))][2:]
    assert (last.flagged_id, last.reviewer) == ("f3", "bob")
    assert last.signed_by(b"bob-key-0123456789") and not last.signed_by(b"other")


def test_eval_scores_through_triton_and_lists_unreadable_rows(
    triton_server: dict[str, object], tmp_path: Path
) -> None:
    rows = [
        {
            "id": f"r{i}",
            "conversation": [{"role": "user", "content": f"question {i}"}]
            + ([{"role": "agent", "content": f"answer {i}"}] if i % 2 else []),
            "label": "unsafe" if i % 3 == 0 else "safe",
            "categories": ["O3"] if i % 3 == 0 else [],
        }
        for i in range(12)
    ]
    lines = [orjson.dumps(r) for r in rows]
    lines += [
        b"not json",
        orjson.dumps({"id": "bad", "conversation": [], "label": "safe"}),
        orjson.dumps(
            {
                "id": "nopolicy",
                "policy_id": "nope",
                "label": "safe",
                "conversation": [{"role": "user", "content": "x"}],
            }
        ),
    ]
    data = tmp_path / "rows.jsonl"
    data.write_bytes(b"\n".join(lines) + b"\n")
    report_path = tmp_path / "report.json"
    out = subprocess.run(
        [
            *CLI,
            "eval",
            "--data",
            str(data),
            "--report",
            str(report_path),
            "--triton-url",
            str(triton_server["grpc"]),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    report = orjson.loads(report_path.read_bytes())
    for key in ("n", "auprc", "precision", "recall", "f1", "fpr", "turns_per_s"):
        assert key in report, key
    assert report["n"] == 12 and report["positives"] == 4
    assert report["n_unreadable"] == 3
    assert {u["ref"] for u in report["unreadable"]} == {f"{data}:13", f"{data}:14", f"{data}:15"}
    assert report["turns_per_s"] > 0 and 0.0 <= report["auprc"] <= 1.0
    assert "auprc" in out.stdout and "unreadable" in out.stdout
