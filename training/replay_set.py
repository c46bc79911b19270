"""The replay set that ships with guardstream (``data/replay.jsonl``).

    python -m training.replay_set [--out data/replay.jsonl] [--per-source 150]

A sample of the rows the shipped default model was trained on (its training split,
``training.public_data.splits``): up to ``--per-source`` rows of each source and label,
chosen by a hash of the row id. Retraining the encoder's adapter from reviews also
trains on these rows (``training.encoder_retrain.retrain_adapter_and_heads``), so that a
few hundred reviews of one pattern do not make the model forget everything else; a
deployment has its reviews, not the public corpus. Never in the regression set (that
is held out of training altogether). Rebuilding it gives the same file.
"""

from __future__ import annotations

import argparse
import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson

from guard.settings import REPLAY_SET
from training.public_data import splits

Row = dict[str, Any]

PER_SOURCE = 150


def build(per_source: int = PER_SOURCE) -> list[Row]:
    groups: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for r in splits.build_splits()["train"]:
        groups[(r["source"], r["label"], r["conversation"][-1]["role"])].append(r)
    rows: list[Row] = []
    for group in groups.values():
        group.sort(key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())
        rows.extend(group[:per_source])
    return sorted(rows, key=lambda r: r["id"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPLAY_SET)
    ap.add_argument("--per-source", type=int, default=PER_SOURCE)
    args = ap.parse_args(argv)
    rows = build(args.per_source)
    args.out.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    unsafe = sum(r["label"] == "unsafe" for r in rows)
    print(f"{args.out}: {len(rows)} rows, {unsafe} unsafe")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
