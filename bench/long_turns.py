"""Long turns: does a harmful request buried in benign text still get caught, and
what do windows cost in false positives and time? One run, several window sizes.

    python -m bench.long_turns [--checkpoint models/default] [--n 60] [--real-traffic]
                               [--threshold T] [--report OUT.json]

In process, through :class:`guard.serving.GuardService` (the code the Triton
model runs), on the shipped model. The texts are real:

* **filler**: long user turns made of 8 real, non-toxic Wikipedia talk comments
  (context_toxicity_wiki, label 0), about 1.5 KB each -- the benign long turns;
* **padded asks**: the same filler with one harmful request (SimpleSafetyTests,
  held out from the default model's training) put at a random sentence boundary;
* **short filler** and **padded asks, short filler**: the same, but the filler is
  16 short sentences (20-70 characters) cut from those comments, so the request
  shares its window with benign sentences (the packing attack);
* **asks alone**: those requests as short turns (what the model does at best);
* **long answers**: GPTFuzz's labelled chatbot answers of 400+ characters to
  harmful questions, safe (label 0) and unsafe (label 1), judged as responses
  (its ``evaluate`` split, questions 80-99; the shipped model does not train on
  GPTFuzz, and ``--with-candidates`` models train on ``train.csv``, questions 0-79).

For each window size (``off`` = one view, the model's head+tail) it prints the
share flagged at the shipped threshold and the time per turn, and the ratio of
each against ``off`` measured in the same run.

With ``--real-traffic`` it also scores the held-out real-traffic sources
(``wiki_talk``, ``convabuse``, ``coconot_contrast``: 11,201 turns at their
natural base rates) with one view and with the model's own windows, and prints
AUPRC, recall at 1% FPR, FPR, recall and turns/s of each, pooled and per source.
``--threshold`` judges at another operating point than the model's own (the
Triton model's ``threshold`` parameter).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from pathlib import Path
from typing import Any

from guard.protocol import RawItem
from guard.scoring import ScorerConfig
from guard.serving import GuardService, ServiceConfig
from guard.windows import sentences
from training.public_data.catalogue import REAL_TRAFFIC_SOURCES as REAL_TRAFFIC
from training.public_data.catalogue import datasets_root

#: ``off``: one view of the whole turn; the others: the window size in characters.
WINDOWS = (None, 400, 200, 120)
OFF = 10**9


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def texts(root: Path, n: int, seed: int = 0) -> dict[str, list[list[dict[str, str]]]]:
    """Conversations per set (lists of ``{"role", "content"}``)."""
    rng = random.Random(seed)
    wiki = [
        r["text"].strip()
        for r in _csv(root / "context_toxicity_wiki" / "data" / "CAT_LARGE" / "gn.csv")
        if r["label"] == "0" and 80 <= len(r["text"].strip()) <= 400
    ]
    sst = root / "simplesafetytests" / "SimpleSafetyTests - test cases.csv"
    asks = [r["prompts_final"] for r in _csv(sst)]
    rng.shuffle(asks)
    short = sorted({s.strip() for t in wiki for s in sentences(t) if 20 <= len(s.strip()) <= 70})
    fillers: list[str] = []
    padded: list[str] = []
    short_fillers: list[str] = []
    short_padded: list[str] = []
    for ask in asks[:n]:
        for k, pool, safe, unsafe in (
            (8, wiki, fillers, padded),
            (16, short, short_fillers, short_padded),
        ):
            parts = rng.sample(pool, k)
            safe.append(" ".join(parts))
            at = rng.randint(1, len(parts) - 1)
            unsafe.append(" ".join([*parts[:at], ask, *parts[at:]]))
    gptfuzz = root / "gptfuzz_labeled_responses" / "datasets"
    questions = {r["index"]: r["text"] for r in _csv(gptfuzz / "questions" / "question_list.csv")}
    answers = [
        r
        for r in _csv(gptfuzz / "responses_labeled" / "evaluate.csv")
        if len(r["Response"]) >= 400 and r["question"] in questions
    ]
    rng.shuffle(answers)

    def qa(label: str) -> list[list[dict[str, str]]]:
        rows = [r for r in answers if r["label"] == label][:n]
        return [
            [
                {"role": "user", "content": questions[r["question"]]},
                {"role": "agent", "content": r["Response"]},
            ]
            for r in rows
        ]

    def user(items: list[str]) -> list[list[dict[str, str]]]:
        return [[{"role": "user", "content": t}] for t in items]

    return {
        "asks alone (unsafe)": user(asks[:n]),
        "padded asks (unsafe)": user(padded),
        "filler (safe)": user(fillers),
        "padded asks, short (unsafe)": user(short_padded),
        "short filler (safe)": user(short_fillers),
        "long answers (unsafe)": qa("1"),
        "long answers (safe)": qa("0"),
    }


def flagged(service: GuardService, convos: list[list[dict[str, str]]]) -> tuple[float, float]:
    """Share of ``convos`` judged unsafe, and seconds per conversation."""
    items = [[RawItem(json.dumps(c).encode(), c[-1]["role"].encode(), b"")] for c in convos]
    start = time.perf_counter()
    answers = service.handle(items)
    seconds = (time.perf_counter() - start) / max(1, len(convos))
    unsafe = [a[0].unsafe for a in answers if not isinstance(a, str)]
    if len(unsafe) != len(convos):
        raise RuntimeError(f"{len(convos) - len(unsafe)} requests were refused")
    return sum(unsafe) / len(unsafe), seconds


def real_traffic(base: GuardService, checkpoint: Path, scorer: ScorerConfig) -> dict[str, Any]:
    """One view against the model's own windows on the held-out real-traffic sources."""
    from training.dataset import example_from_row
    from training.evaluate import report_from_scores
    from training.metrics import SOURCE_KEYS
    from training.public_data.loaders import LOADERS

    rows = [r for name in REAL_TRAFFIC for r in LOADERS[name](datasets_root())]
    examples = [example_from_row(r) for r in rows]
    out: dict[str, Any] = {}
    for label, size in (("one view", OFF), ("windows", None)):
        svc = GuardService(
            base.guard, base.policies, ServiceConfig(checkpoint, scorer, window_chars=size)
        )
        start = time.perf_counter()
        answers = []
        for i in range(0, len(rows), 64):
            items = [
                [RawItem(json.dumps(r["conversation"]).encode(), b"user", b"")]
                for r in rows[i : i + 64]
            ]
            answers += [a[0] for a in svc.handle(items) if not isinstance(a, str)]
        res: dict[str, Any] = {"turns_per_s": len(rows) / (time.perf_counter() - start)}
        report = report_from_scores(
            examples, [a.p_unsafe for a in answers], [a.unsafe for a in answers]
        )
        res["pooled"] = {k: report[k] for k in SOURCE_KEYS}
        res.update(report["per_source"])
        out[label] = res
        print(f"real traffic, {label}: {res['turns_per_s']:.1f} turns/s")
        for name in ("pooled", *REAL_TRAFFIC):
            print("  " + f"{name:18} " + ", ".join(f"{k} {_f(v)}" for k, v in res[name].items()))
    return out


def _f(v: object) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, default=Path("models/default"))
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--real-traffic", action="store_true")
    ap.add_argument("--threshold", type=float, default=None, help="default: the model's own")
    ap.add_argument("--report", type=Path)
    args = ap.parse_args(argv)
    sets = texts(datasets_root(), args.n)
    scorer = ScorerConfig(threshold=args.threshold)
    base = GuardService.load(ServiceConfig(args.checkpoint, scorer, window_chars=OFF))
    report: dict[str, Any] = {"n": {k: len(v) for k, v in sets.items()}, "results": {}}
    for size in WINDOWS:
        svc = GuardService(
            base.guard,
            base.policies,
            ServiceConfig(args.checkpoint, scorer, window_chars=size or OFF),
        )
        report["results"][str(size or "off")] = {
            name: dict(zip(("flagged", "s_per_turn"), flagged(svc, convos), strict=True))
            for name, convos in sets.items()
        }
    off = report["results"]["off"]
    print(f"{'set':24} {'window':>6} {'flagged':>8} {'vs off':>7} {'ms/turn':>8} {'x off':>6}")
    for size, res in report["results"].items():
        for name, r in res.items():
            o = off[name]
            ratio = r["flagged"] / o["flagged"] if o["flagged"] else float("inf")
            print(
                f"{name:24} {size:>6} {r['flagged']:8.3f} {ratio:7.2f} "
                f"{r['s_per_turn'] * 1000:8.1f} {r['s_per_turn'] / o['s_per_turn']:6.2f}"
            )
    if args.real_traffic:
        report["real_traffic"] = real_traffic(base, args.checkpoint, scorer)
    if args.report:
        args.report.write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
