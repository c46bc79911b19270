"""Agreement between reviewers and their throughput (pure; for the stats page).

Labels are the safe/unsafe decisions on items that two or more reviewers judged (the
overlap on uncertain items). Cohen's kappa compares two reviewers on the items both
judged; Krippendorff's alpha (nominal) takes every item with two or more labels, any
number of reviewers. Both are 1 for full agreement, 0 for agreement at chance.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def cohen_kappa(pairs: Sequence[tuple[str, str]]) -> float | None:
    """Kappa of two reviewers' labels on the same items; None with no items, or when
    both gave one label throughout (chance agreement 1: undefined)."""
    n = len(pairs)
    if not n:
        return None
    observed = sum(a == b for a, b in pairs) / n
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    chance = sum(first[k] * second[k] for k in first) / (n * n)
    if chance >= 1:
        return None
    return (observed - chance) / (1 - chance)


def krippendorff_alpha(units: Sequence[Sequence[str]]) -> float | None:
    """Nominal alpha over ``units`` (each item's labels, one per reviewer); items with
    fewer than two labels do not count. None when nothing counts or there is one label
    value in all (no disagreement is possible)."""
    units = [u for u in units if len(u) >= 2]
    if not units:
        return None
    # Coincidences: within each unit, every ordered pair of distinct labellings weighs
    # 1 / (m - 1).
    o: dict[tuple[str, str], float] = {}
    for u in units:
        m = len(u)
        for i, j in itertools.permutations(range(m), 2):
            o[(u[i], u[j])] = o.get((u[i], u[j]), 0.0) + 1 / (m - 1)
    totals: dict[str, float] = {}
    for (c, _), w in o.items():
        totals[c] = totals.get(c, 0.0) + w
    n = sum(totals.values())
    if len(totals) < 2:
        return None
    disagree_observed = sum(w for (c, k), w in o.items() if c != k)
    disagree_expected = sum(totals[c] * totals[k] for c in totals for k in totals if c != k) / (
        n - 1
    )
    return 1 - disagree_observed / disagree_expected


@dataclass(frozen=True, slots=True)
class ReviewerStats:
    reviewer: str
    reviews: int
    #: Reviews per hour between their first and last review (None with one review).
    per_hour: float | None


def throughput(times: Mapping[str, Sequence[float]]) -> list[ReviewerStats]:
    """Per reviewer, from the times (seconds) of their reviews; most reviews first."""
    out = []
    for reviewer, ts in times.items():
        span = max(ts) - min(ts) if ts else 0.0
        rate = (len(ts) - 1) / span * 3600 if len(ts) > 1 and span > 0 else None
        out.append(ReviewerStats(reviewer, len(ts), rate))
    return sorted(out, key=lambda s: (-s.reviews, s.reviewer))


def pairwise_kappa(labels: Mapping[str, Mapping[str, str]]) -> dict[tuple[str, str], float | None]:
    """Kappa for every two reviewers who judged an item in common; ``labels``: item ->
    reviewer -> label."""
    reviewers = sorted({r for by in labels.values() for r in by})
    out = {}
    for a, b in itertools.combinations(reviewers, 2):
        pairs = [(by[a], by[b]) for by in labels.values() if a in by and b in by]
        if pairs:
            out[(a, b)] = cohen_kappa(pairs)
    return out
