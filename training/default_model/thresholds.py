"""The operating point: the lowest threshold whose false-positive rate holds on
every validation source (:func:`pick_threshold`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

TARGET_FPR = 0.05
#: A validation source needs this many safe rows to have its own FPR check.
MIN_SOURCE_ROWS = 20


def pick_threshold(
    labels: np.ndarray,
    scores: np.ndarray,
    target_fpr: float,
    sources: np.ndarray | None = None,
    min_rows: int = MIN_SOURCE_ROWS,
    exclude: Sequence[str] = (),
) -> float:
    """The lowest threshold (on a 0.01 grid from 0.05) with FPR <= ``target_fpr``;
    0.99 when no grid point meets it.

    With ``sources``, the FPR must hold on EACH source's safe rows. Only sources
    with at least ``min_rows`` safe rows are checked (smaller ones are left out,
    not pooled); all safe rows are pooled when no source has that many. The pooled
    rate would let many easy safe rows (everyday requests, refusals) hide a hard
    source (statements about minorities, homonyms): adding easy rows, as a new
    source or to a source that does not set the threshold, would lower it.

    Sources in ``exclude`` are not checked (near-miss sets whose safe rows were
    chosen to sit next to unsafe ones; see ``catalogue.NEAR_MISS_SOURCES``).
    """
    per_source = source_thresholds(labels, scores, target_fpr, sources, min_rows, exclude)
    return max(per_source.values())


def source_thresholds(
    labels: np.ndarray,
    scores: np.ndarray,
    target_fpr: float,
    sources: np.ndarray | Sequence[str] | None = None,
    min_rows: int = MIN_SOURCE_ROWS,
    exclude: Sequence[str] = (),
) -> dict[str, float]:
    """``{source: its lowest threshold}`` for :func:`pick_threshold` (``{"all": t}``
    when pooled). Raises ``ValueError`` when there are no safe rows to check."""
    safe = ~np.asarray(labels, bool)
    if sources is not None and exclude:
        safe &= ~np.isin(np.asarray(sources), list(exclude))
    if not safe.any():
        raise ValueError("no safe rows to measure a false-positive rate on")
    groups: dict[str, np.ndarray] = {}
    if sources is not None:
        src = np.asarray(sources)
        for name in sorted(set(src[safe])):
            g = safe & (src == name)
            if g.sum() >= min_rows:
                groups[str(name)] = g
    groups = groups or {"all": safe}
    return {name: _lowest_threshold(scores[g], target_fpr) for name, g in groups.items()}


def _lowest_threshold(safe_scores: np.ndarray, target_fpr: float) -> float:
    for t in np.round(np.arange(0.05, 0.991, 0.01), 2):
        if (safe_scores >= t).mean() <= target_fpr:
            return float(t)
    return 0.99
