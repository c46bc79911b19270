"""The moderation worker's start-up time and memory, against the real broker and Triton.

    python -m bench.worker_footprint [--runs 3] [--report OUT.json]

Starts the embedded broker and the local tritonserver once (the default model),
then starts ``guardstream worker`` ``--runs`` times in a row and measures, for
each start: seconds until its ``/readyz`` answers 200, its resident memory then
(VmRSS, VmHWM), and whether torch's shared library is mapped into it. The cost
of the worker's imports alone (a fresh interpreter importing what the worker
imports) is measured the same number of times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.run import broker_and_triton, isolated_stack, proc_status_mb
from guard.settings import Settings

#: What ``guardstream worker`` imports before it serves (stream_app.worker.run_worker).
WORKER_IMPORTS = "import faust, stream_app.agents, stream_app.app, stream_app.topics"


def maps_torch(pid: int) -> bool:
    """True when any file of the torch package is mapped into the process."""
    return "/torch/" in Path(f"/proc/{pid}/maps").read_text()


def import_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", WORKER_IMPORTS], check=True)
    return time.perf_counter() - start


def measure(s: Settings, runs: int) -> dict[str, Any]:
    from stream_app.launchers.model import resolve_local_model
    from stream_app.launchers.worker import worker_process
    from stream_app.topics import create_topics

    work = Path(tempfile.mkdtemp(prefix="guardstream-footprint-"))
    s, ports, broker_port = isolated_stack(s, work, "footprint")
    model = resolve_local_model(s.local.data_dir)
    starts: list[dict[str, Any]] = []
    with broker_and_triton(s, work, ports, broker_port, model.checkpoint):
        asyncio.run(create_topics(s))
        for i in range(runs):
            worker = worker_process(s, work / f"worker-{i}.log")
            t0 = time.perf_counter()
            with worker:
                ready_s = time.perf_counter() - t0
                pid = worker.pid or 0
                starts.append(
                    {
                        "ready_s": round(ready_s, 2),
                        "rss_mb": round(proc_status_mb(pid, "VmRSS"), 1),
                        "peak_rss_mb": round(proc_status_mb(pid, "VmHWM"), 1),
                        "torch_mapped": maps_torch(pid),
                    }
                )
            print(f"  start {i + 1}: {starts[-1]}", flush=True)
    imports = [import_seconds() for _ in range(runs)]
    return {
        "model": model.description,
        "starts": starts,
        "ready_s_median": statistics.median(x["ready_s"] for x in starts),
        "rss_mb_median": statistics.median(x["rss_mb"] for x in starts),
        "torch_mapped": any(x["torch_mapped"] for x in starts),
        "import_s": [round(x, 2) for x in imports],
        "import_s_median": round(statistics.median(imports), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--report", type=Path, default=None)
    args = parser.parse_args(argv)
    report = measure(Settings(), args.runs)
    print(json.dumps(report, indent=2))
    if args.report:
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
