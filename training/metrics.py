"""Classification metrics for guard models (pure): the one AUPRC of all of training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def auprc(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> float | None:
    """Average precision of ``scores`` for ``labels``; None when only one class occurs."""
    from sklearn.metrics import average_precision_score

    y = np.asarray(labels, bool)
    if y.all() or not y.any():
        return None
    return float(average_precision_score(y, np.asarray(scores, float)))


def recall_at_fpr(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray, max_fpr: float
) -> float | None:
    """Recall at the lowest threshold whose false-positive rate is at most ``max_fpr``
    (a turn is flagged when its score is strictly above the threshold, so ties with a
    negative count against the model); None when only one class occurs."""
    y = np.asarray(labels, bool)
    s = np.asarray(scores, float)
    if y.all() or not y.any():
        return None
    negatives = np.sort(s[~y])[::-1]
    allowed = int(np.floor(max_fpr * len(negatives)))  # negatives that may be flagged
    if allowed >= len(negatives):
        return 1.0
    return float((s[y] > negatives[allowed]).mean())


def binary_report(
    labels: Sequence[bool], scores: Sequence[float], predicted: Sequence[bool]
) -> dict[str, Any]:
    """AUPRC (threshold-free) of ``scores``, and precision, recall, F1, FPR of the
    verdicts ``predicted`` (the model's own, at its threshold)."""
    n = len(labels)
    pos = sum(labels)
    pred = list(predicted)
    tp = sum(p and y for p, y in zip(pred, labels, strict=True))
    fp = sum(p and not y for p, y in zip(pred, labels, strict=True))
    fn = pos - tp
    neg = n - pos
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / pos if pos else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "n": n,
        "positives": pos,
        "auprc": auprc(labels, scores),
        "recall_at_1pct_fpr": recall_at_fpr(labels, scores, 0.01),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fpr": fp / neg if neg else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
    }


def per_category_auprc(
    labels: Sequence[bool], categories: Sequence[Sequence[str]], scores: Sequence[float]
) -> dict[str, float | None]:
    """AUPRC per category: that category's rows against every safe row."""
    codes = sorted({c for cats in categories for c in cats})
    out: dict[str, float | None] = {}
    for code in codes:
        ys, ss = [], []
        for y, cats, s in zip(labels, categories, scores, strict=True):
            if code in cats:
                ys.append(True)
                ss.append(s)
            elif not y:
                ys.append(False)
                ss.append(s)
        out[code] = auprc(ys, ss)
    return out


#: What the report gives for each source of a multi-source evaluation file.
SOURCE_KEYS = ("n", "positives", "auprc", "recall", "fpr", "recall_at_1pct_fpr")


def table(report: Mapping[str, Any], title: str = "") -> str:
    """A readable table of a report."""

    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)

    rows = [
        (k, f(report.get(k)))
        for k in (
            "n",
            "positives",
            "auprc",
            "precision",
            "recall",
            "f1",
            "fpr",
            "recall_at_1pct_fpr",
            "turns_per_s",
        )
        if k in report
    ]
    rows += [(f"auprc[{k}]", f(v)) for k, v in (report.get("per_category") or {}).items()]
    for source, r in (report.get("per_source") or {}).items():
        cells = ", ".join(f"{k} {f(r.get(k))}" for k in SOURCE_KEYS if k != "n")
        rows.append((f"source[{source}]", f"n {r['n']}, {cells}"))
    width = max(len(k) for k, _ in rows)
    lines = [title] if title else []
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    return "\n".join(lines)
