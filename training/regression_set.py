"""The fixed regression set that ships with guardstream (``data/regression.jsonl``).

    python -m training.regression_set [--out data/regression.jsonl]

Public data that neither the shipped model nor retraining ever trains on, at natural
base rates where the source has them, both sides (see SOURCES.md for licenses):

* SimpleSafetyTests: all 100 clearly harmful requests (unsafe, user side, LG1 codes);
* AILuminate practice prompts (en_US): 200, by a hash of the id (unsafe, user side);
* ConvAbuse: every message real users sent to chatbots (safe and abusive, user side);
* Wikipedia talk comments: 600, by a hash of the id (mostly safe, user side);
* DICES-350: 350 multi-turn conversations whose last agent reply raters judged
  (agent side; binary labels).

The promotion gate (``training.gate``) holds a candidate to the serving model's recall,
false-positive rate and AUPRC on it. Rebuilding it gives the same file.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

import orjson

from guard.settings import REGRESSION_SET
from training.public_data import loaders
from training.public_data.catalogue import datasets_root

Row = dict[str, Any]


def _sample(rows: list[Row], n: int) -> list[Row]:
    """``n`` rows chosen by a hash of their id (stable, no order bias)."""
    return sorted(rows, key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())[:n]


def build(root: Path) -> list[Row]:
    dices = [r for r in loaders.load_dices(root) if r["id"].startswith("dices_350:")]
    rows = (
        loaders.load_simplesafetytests(root)
        + _sample(loaders.load_ailuminate(root), 200)
        + loaders.load_convabuse(root)
        + _sample(loaders.load_wiki_talk(root), 600)
        + dices
    )
    return sorted(rows, key=lambda r: r["id"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REGRESSION_SET)
    args = ap.parse_args(argv)
    rows = build(datasets_root())
    args.out.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    unsafe = sum(r["label"] == "unsafe" for r in rows)
    print(f"{args.out}: {len(rows)} rows, {unsafe} unsafe")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
