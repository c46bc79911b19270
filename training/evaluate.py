"""Evaluation of a guard model on labelled examples (in-process or through Triton)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from guard.scoring import Guard, GuardRequest
from guard.taxonomy import PolicyRegistry
from training.dataset import Example
from training.metrics import binary_report, per_category_auprc


def report_from_scores(
    examples: Sequence[Example],
    scores: Sequence[float],
    threshold: float,
    seconds: float | None = None,
) -> dict[str, Any]:
    labels = [e.unsafe for e in examples]
    report = binary_report(labels, scores, threshold)
    report["per_category"] = per_category_auprc(labels, [e.categories for e in examples], scores)
    for side in ("user", "agent"):
        idx = [i for i, e in enumerate(examples) if e.side.value == side]
        if idx:
            sub = binary_report([labels[i] for i in idx], [scores[i] for i in idx], threshold)
            report[f"{side}_side"] = {k: sub[k] for k in ("n", "auprc", "f1", "fpr")}
    if seconds:
        report["turns_per_s"] = len(examples) / seconds
    return report


def evaluate_in_process(
    guard: Guard,
    examples: Sequence[Example],
    policies: PolicyRegistry,
    threshold: float,
    batch: int = 64,
) -> dict[str, Any]:
    start = time.perf_counter()
    scores: list[float] = []
    for i in range(0, len(examples), batch):
        reqs = [
            GuardRequest(e.turns, e.side, policies.get(e.policy_id))
            for e in examples[i : i + batch]
        ]
        scores += [r.p_unsafe for r in guard.score(reqs)]
    return report_from_scores(examples, scores, threshold, time.perf_counter() - start)
