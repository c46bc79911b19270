"""The calibration set that ships with guardstream (``data/calibration.jsonl``).

    python -m training.calibration_set [--out data/calibration.jsonl]

Safe turns of real traffic that nothing trains on, whose text the regression set
(``training.regression_set``) does not hold, each text once, both sides:

* ConvAbuse, train and validation splits: real users' messages to chatbots that most
  annotators did not call abusive (the regression set has the test split);
* Wikipedia talk comments rated not toxic: 800 of those the regression set does not
  hold, by a hash of the id;
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
from training.public_data.splits import overlap_key, side
from training.regression_set import build as regression_rows

Row = dict[str, Any]


def _sample(rows: list[Row], n: int) -> list[Row]:
    return sorted(rows, key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())[:n]


def build(root: Path) -> list[Row]:
    regression = regression_rows(root)
    in_regression = {r["id"] for r in regression}
    held_texts = {(side(r), overlap_key(r)) for r in regression}
    wiki = [r for r in loaders.load_wiki_talk(root) if r["id"] not in in_regression]
    rows = (
        loaders.load_convabuse(root, "train")
        + loaders.load_convabuse(root, "valid")
        + _sample([r for r in wiki if r["label"] == "safe"], 800)
        + [r for r in loaders.load_dices(root) if r["id"].startswith("dices_990:")]
    )
    out, seen = [], set()
    for r in sorted(rows, key=lambda r: r["id"]):
        key = (side(r), overlap_key(r))
        # Not a text the regression set holds (the gate's evidence stays independent),
        # and each text once (a common "yes" must not weigh hundreds of times).
        if r["label"] == "safe" and key not in held_texts and key not in seen:
            seen.add(key)
            out.append(r)
    return out


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
