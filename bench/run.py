"""``guardstream bench``: model alone vs Triton vs the whole stream, in one run.

Every number of a report comes from the same run, the same model and the same
turns, so the ratios compare like with like on a noisy machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.turns import as_conversation, bench_turns
from guard.events import ChatTurn
from guard.settings import Settings

if TYPE_CHECKING:
    from stream_app.launchers.process import ManagedProcess
    from stream_app.launchers.tritonserver import TritonPorts


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status_mb(pid: int, key: str) -> float:
    """A memory line of ``/proc/PID/status`` in MiB (``VmRSS``: now, ``VmHWM``: peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process, in MiB."""
    return proc_status_mb(pid, "VmHWM")


def triton_model_pids(server_pid: int) -> list[int]:
    """The python-backend stub processes (the model) of a tritonserver."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server_pid and b"triton_python_backend_stub" in cmd:
            out.append(int(d.name))
    return out


def isolated_stack(s: Settings, work: Path, app_id: str) -> tuple[Settings, TritonPorts, int]:
    """``s`` pointed at a broker, a tritonserver and a worker on free ports of their
    own (state under ``work``); returns the settings, the Triton ports, the broker port."""
    from stream_app.launchers.tritonserver import TritonPorts

    ports = TritonPorts(_free_port(), _free_port(), _free_port())
    broker_port = _free_port()
    s = s.model_copy(
        update={
            "kafka": s.kafka.for_local_broker(broker_port),
            "triton": s.triton.model_copy(update={"url": f"127.0.0.1:{ports.grpc}"}),
            "worker": s.worker.model_copy(
                update={"web_port": _free_port(), "data_dir": work / "w", "app_id": app_id}
            ),
        }
    )
    return s, ports, broker_port


@contextlib.contextmanager
def broker_and_triton(
    s: Settings, work: Path, ports: TritonPorts, broker_port: int, checkpoint: Path
) -> Iterator[ManagedProcess]:
    """The embedded broker and the local tritonserver serving ``checkpoint``, on the
    ports of :func:`isolated_stack`; yields the tritonserver process."""
    from stream_app.launchers.broker import broker_process
    from stream_app.launchers.tritonserver import triton_process

    env = {"GUARDSTREAM_MODEL_CHECKPOINT": str(checkpoint.resolve())}
    with (
        broker_process(work / "broker", broker_port),
        triton_process(
            s.local.model_repository,
            work / "triton",
            ports,
            explicit_models=[s.triton.model_name],
            env=env,
        ) as triton,
    ):
        yield triton


def model_only(checkpoint: Path, turns: list[ChatTurn], batch: int) -> float:
    from guard.loaders import load_guard
    from guard.scoring import GuardRequest
    from guard.taxonomy import LLAMA_GUARD_1

    guard = load_guard(checkpoint)
    reqs = [GuardRequest(as_conversation(t), t.role, LLAMA_GUARD_1) for t in turns]
    guard.score(reqs[:batch])  # warm-up
    start = time.perf_counter()
    for i in range(0, len(reqs), batch):
        guard.score(reqs[i : i + batch])
    return len(reqs) / (time.perf_counter() - start)


async def triton_only(s: Settings, turns: list[ChatTurn], concurrency: int) -> float:
    from guard.protocol import ClassifyRequest
    from stream_app.triton_client import GuardClient

    reqs = [ClassifyRequest(as_conversation(t), t.role) for t in turns]
    async with GuardClient(s.triton) as c:
        await c.wait_ready()
        await c.classify_many(reqs[:concurrency], concurrency)
        start = time.perf_counter()
        await c.classify_many(reqs, concurrency)
        return len(reqs) / (time.perf_counter() - start)


async def end_to_end(
    s: Settings, turns: list[ChatTurn], rate: float | None
) -> tuple[float, list[float]]:
    """(turns/s, produce->verdict latencies in ms); ``rate`` paces the producer."""
    from aiokafka import AIOKafkaProducer

    from stream_app.kafka_config import aiokafka_options
    from stream_app.kafka_io import follow

    sent: dict[str, float] = {}
    latencies: list[float] = []
    producer = AIOKafkaProducer(**aiokafka_options(s.kafka), acks="all", linger_ms=2)
    await producer.start()

    async def produce() -> None:
        start = time.perf_counter()
        for i, t in enumerate(turns):
            if rate:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent[t.event_id] = time.perf_counter()
            await producer.send(s.topics.input, t.to_json(), key=t.conversation_id.encode())
        await producer.flush()

    async def consume() -> float:
        last = 0.0
        async for v in follow(
            s, s.topics.verdicts, count=len(turns), timeout_s=1800, from_beginning=False
        ):
            now = time.perf_counter()
            eid = str(v["event_id"])
            if eid in sent:
                latencies.append((now - sent[eid]) * 1000)
            last = now
        return last

    consumer = asyncio.ensure_future(consume())
    await asyncio.sleep(1.0)  # the follower is subscribed at the end of the topic
    first = time.perf_counter()
    await produce()
    last = await consumer
    await producer.stop()
    return len(turns) / (last - first), latencies


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def run_bench(
    s: Settings, n_turns: int, report_path: Path | None, backlog: int = 0
) -> dict[str, Any]:
    from stream_app.launchers.model import resolve_local_model
    from stream_app.launchers.worker import worker_process
    from stream_app.topics import create_topics

    work = Path(tempfile.mkdtemp(prefix="guardstream-bench-"))
    s, ports, broker_port = isolated_stack(s, work, "guardstream-bench")
    web_port = s.worker.web_port
    model = resolve_local_model(s.local.data_dir)
    turns = bench_turns(n_turns)
    w = s.worker
    report: dict[str, Any] = {
        "model": model.description,
        "turns": n_turns,
        "batch_size": w.batch_size,
        "batch_window_s": w.batch_window_s,
        "max_in_flight": w.max_in_flight,
        "idle_fetch_backoff_ms": s.kafka.idle_fetch_backoff_ms,
    }
    print(f"bench: {n_turns} turns, model: {model.description}", flush=True)
    report["model_only_tps"] = model_only(model.checkpoint, turns, batch=w.batch_size)
    print(
        f"  model only (in-process, batch {w.batch_size}): {report['model_only_tps']:.1f} turns/s",
        flush=True,
    )
    with broker_and_triton(s, work, ports, broker_port, model.checkpoint) as triton:
        by_conc = {c: asyncio.run(triton_only(s, turns, c)) for c in (8, 32, 64)}
        report["triton_tps_by_concurrency"] = by_conc
        report["triton_tps"] = max(by_conc.values())
        print(f"  triton only: {by_conc}", flush=True)
        report["naive_tps"] = asyncio.run(triton_only(s, turns[: max(50, n_turns // 4)], 1))
        print(f"  naive (one request at a time): {report['naive_tps']:.1f} turns/s", flush=True)
        asyncio.run(create_topics(s))
        worker = worker_process(s, work / "worker.log")
        with worker:
            asyncio.run(end_to_end(s, bench_turns(64, seed=9, tag="warm"), None))
            tps, _ = asyncio.run(end_to_end(s, turns, None))
            report["e2e_tps"] = tps
            rate = tps / 2
            paced = bench_turns(max(100, int(rate * 20)), seed=1, tag="lat")
            _, lat = asyncio.run(end_to_end(s, paced, rate))
            report["e2e_latency_rate_tps"] = rate
            report["e2e_p50_ms"] = _pct(lat, 50)
            report["e2e_p99_ms"] = _pct(lat, 99)
            report["worker_peak_rss_mb"] = peak_rss_mb(worker.pid or 0)
        stubs = triton_model_pids(triton.pid or 0)
        report["triton_peak_rss_mb"] = max((peak_rss_mb(p) for p in stubs), default=0.0)
        if backlog:
            report.update(_backlog(s, backlog, work, web_port))
    mo = report["model_only_tps"]
    report["ratio_e2e_to_model_only"] = report["e2e_tps"] / mo
    report["ratio_triton_to_model_only"] = report["triton_tps"] / mo
    report["ratio_batched_to_naive"] = report["triton_tps"] / report["naive_tps"]
    batch_model_ms = 1000 * w.batch_size / mo
    report["p99_budget_ms"] = 2 * w.batch_window_s * 1000 + batch_model_ms
    print(format_report(report), flush=True)
    if report_path:
        import json

        report_path.write_text(json.dumps(report, indent=2))
    return report


def _backlog(s: Settings, n: int, work: Path, web_port: int) -> dict[str, Any]:
    """Produce ``n`` turns first, then let a fresh worker drain them; sample its RSS."""
    from stream_app.kafka_io import produce
    from stream_app.launchers.worker import worker_process

    s = s.model_copy(
        update={
            "topics": s.topics.model_copy(
                update={"input": "bench-backlog", "verdicts": "bench-backlog-verdicts"}
            ),
            "worker": s.worker.model_copy(update={"app_id": "guardstream-backlog"}),
        }
    )
    from stream_app.topics import create_topics

    asyncio.run(create_topics(s))
    turns = bench_turns(n, seed=5, tag="backlog")
    asyncio.run(produce(s, [(t.conversation_id.encode(), t.to_json()) for t in turns]))
    worker = worker_process(s, work / "backlog-worker.log")
    samples: list[float] = []
    curve: list[tuple[int, float]] = []  # (verdicts written, worker RSS MiB)
    start = time.perf_counter()
    with worker:
        pid = worker.pid or 0
        while True:
            rss = proc_status_mb(pid, "VmRSS")
            samples.append(rss)
            done = _verdicts_written(web_port)
            curve.append((done, round(rss, 1)))
            if done >= n or time.perf_counter() - start > 3600:
                break
            time.sleep(2.0)
    return {
        "backlog_turns": n,
        "backlog_drained": done,
        "backlog_seconds": time.perf_counter() - start,
        "backlog_worker_rss_mb_first": samples[0] if samples else 0.0,
        "backlog_worker_rss_mb_max": max(samples, default=0.0),
        "backlog_worker_rss_mb_last": samples[-1] if samples else 0.0,
        "backlog_worker_rss_curve": curve[:: max(1, len(curve) // 20)] + curve[-1:],
    }


def _verdicts_written(port: int) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return int(
        sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("guardstream_verdicts_total")
        )
    )


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"model: {r['model']}",
        f"turns: {r['turns']}  batch_size: {r['batch_size']}  window: {r['batch_window_s']}s  "
        f"max_in_flight: {r['max_in_flight']}  "
        f"idle fetch backoff: {r.get('idle_fetch_backoff_ms', 0)} ms",
        f"model only   {r['model_only_tps']:8.1f} turns/s",
        f"triton only  {r['triton_tps']:8.1f} turns/s   (by concurrency "
        + ", ".join(f"{c}: {v:.1f}" for c, v in r["triton_tps_by_concurrency"].items())
        + ")",
        f"naive        {r['naive_tps']:8.1f} turns/s   (one request at a time)",
        f"end to end   {r['e2e_tps']:8.1f} turns/s",
        f"latency at {r['e2e_latency_rate_tps']:.0f} turns/s (half max): "
        f"p50 {r['e2e_p50_ms']:.0f} ms, p99 {r['e2e_p99_ms']:.0f} ms "
        f"(budget 2 x window + one batch's model time = {r['p99_budget_ms']:.0f} ms)",
        f"ratios: e2e/model-only {r['ratio_e2e_to_model_only']:.2f}, "
        f"triton/model-only {r['ratio_triton_to_model_only']:.2f}, "
        f"batched/naive {r['ratio_batched_to_naive']:.2f}",
        f"peak RSS: worker {r['worker_peak_rss_mb']:.0f} MiB, "
        f"triton model process {r['triton_peak_rss_mb']:.0f} MiB",
    ]
    if "backlog_turns" in r:
        lines.append(
            f"backlog {r['backlog_turns']} turns drained {r['backlog_drained']} in "
            f"{r['backlog_seconds']:.0f}s; worker RSS first/max/last "
            f"{r['backlog_worker_rss_mb_first']:.0f}/{r['backlog_worker_rss_mb_max']:.0f}/"
            f"{r['backlog_worker_rss_mb_last']:.0f} MiB"
        )
    return "\n".join(lines)
