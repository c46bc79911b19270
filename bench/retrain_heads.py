"""What retraining the encoder guard's heads from reviews buys, on one public source.

    python -m bench.retrain_heads convabuse [--reviews 400] [--pull 0.05 0.5]

Half of the source's rows (by a hash of the row id) stand for reviewed turns, the first
``--reviews`` of them (shuffled, seed 0) train the heads (``training.encoder_retrain``)
from the shipped model; the other half (at most 600 rows) is held out. A fixed set the
shipped model never trained on (SimpleSafetyTests, 300 Alpaca instructions, the
project's benign hard negatives) shows what the update costs elsewhere. For the shipped
model and each ``--pull`` it prints AUPRC, recall and false-positive rate at the model's
threshold on both sets, measured in the same run. In process, CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
from pathlib import Path
from typing import Any

from guard.loaders import load_guard
from guard.taxonomy import PolicyRegistry
from training.dataset import Example, example_from_row
from training.encoder_retrain import HeadUpdate, retrain_heads
from training.evaluate import evaluate_in_process
from training.public_data import loaders
from training.public_data.catalogue import datasets_root

SHIPPED = Path(__file__).resolve().parents[1] / "models" / "default"


def _half(row_id: str) -> int:
    return int(hashlib.sha256(row_id.encode()).hexdigest()[:8], 16) % 2


def _summary(guard: Any, examples: list[Example], policies: PolicyRegistry) -> str:
    r = evaluate_in_process(guard, examples, policies)
    auprc = "n/a" if r["auprc"] is None else f"{r['auprc']:.3f}"
    return f"AUPRC {auprc}  recall {r['recall']:.3f}  FPR {r['fpr']:.3f}  (n={r['n']})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="a loader of training.public_data.loaders, e.g. convabuse")
    ap.add_argument("--reviews", type=int, default=400)
    ap.add_argument("--pull", type=float, nargs="+", default=[0.05])
    args = ap.parse_args(argv)
    root, policies = datasets_root(), PolicyRegistry()
    rows = getattr(loaders, f"load_{args.source}")(root)
    reviewed = [r for r in rows if _half(r["id"]) == 0]
    random.Random(0).shuffle(reviewed)
    train = [example_from_row(r, policies) for r in reviewed[: args.reviews]]
    held = [example_from_row(r, policies) for r in rows if _half(r["id"]) == 1][:600]
    fixed_rows = loaders.load_simplesafetytests(root) + loaders.load_alpaca_harmless(root, 300)
    fixed_rows += loaders.load_benign()
    fixed = [example_from_row(r, policies) for r in fixed_rows]
    base = load_guard(SHIPPED)
    print(f"{args.source}: {len(train)} reviews, {len(held)} held out, fixed set {len(fixed)}")
    print(f"shipped      held out: {_summary(base, held, policies)}")
    print(f"             fixed:    {_summary(base, fixed, policies)}")
    with tempfile.TemporaryDirectory() as tmp:
        for pull in args.pull:
            out = retrain_heads(SHIPPED, train, policies, Path(tmp) / str(pull), HeadUpdate(pull))
            cand = load_guard(out)
            print(f"pull {pull:<7} held out: {_summary(cand, held, policies)}")
            print(f"             fixed:    {_summary(cand, fixed, policies)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
