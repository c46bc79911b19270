"""The calibration set that ships with guardstream (``data/calibration.jsonl``).

    python -m training.calibration_set [--out data/calibration.jsonl]

Safe turns of real traffic that nothing trains on and that are not in the regression
set (``training.regression_set``), both sides:

* ConvAbuse, train and validation splits: real users' messages to chatbots that most
  annotators did not call abusive (the regression set has the test split);
* Wikipedia talk comments rated not toxic: 800 of those the regression set does not
  hold, by a hash of the id;
* CoCoNot's contrast set: benign requests that look like unsafe ones;
* DICES-990: chatbot replies raters judged safe (agent side; the regression set has
  DICES-350).

A retrained encoder guard keeps the serving model's operating point on it
(:func:`training.encoder_retrain.hold_operating_point`): per side, its false-positive
rate here is the serving model's, so a candidate's gain is recall at the same
false-positive rate and not a moved threshold. Rebuilding it gives the same file.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

import orjson

from guard.settings import CALIBRATION_SET
from training.public_data import loaders
from training.public_data.catalogue import datasets_root
from training.regression_set import build as regression_rows

Row = dict[str, Any]


def _sample(rows: list[Row], n: int) -> list[Row]:
    return sorted(rows, key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())[:n]


def build(root: Path) -> list[Row]:
    in_regression = {r["id"] for r in regression_rows(root)}
    wiki = [r for r in loaders.load_wiki_talk(root) if r["id"] not in in_regression]
    rows = (
        loaders.load_convabuse(root, "train")
        + loaders.load_convabuse(root, "valid")
        + _sample([r for r in wiki if r["label"] == "safe"], 800)
        + loaders.load_coconot_contrast(root)
        + [r for r in loaders.load_dices(root) if r["id"].startswith("dices_990:")]
    )
    safe = [r for r in rows if r["label"] == "safe" and r["id"] not in in_regression]
    return sorted(safe, key=lambda r: r["id"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=CALIBRATION_SET)
    args = ap.parse_args(argv)
    rows = build(datasets_root())
    args.out.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    sides: dict[str, int] = {}
    for r in rows:
        side = r["conversation"][-1]["role"]
        sides[side] = sides.get(side, 0) + 1
    print(f"{args.out}: {len(rows)} safe rows {sides}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
