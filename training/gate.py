"""The promotion gate: is a candidate at least as good as the serving model, everywhere?

Pure functions over evaluation reports (``training.evaluate.report_from_scores``) of the
candidate and the serving model on the same evaluation sets, named by their role:

* ``validation``: the reviewed turns held out of training (the audit sample's among
  them). The candidate must beat the serving model's AUPRC by ``margin``.
* ``regression``: a fixed set that ships with the deployment (public held-out data,
  never trained on). The candidate may not lose more than ``auprc_tolerance`` of AUPRC.

On every set, per side (user prompts, agent replies) at the operating threshold, recall
may not fall by more than ``recall_tolerance`` nor the false-positive rate rise by more
than ``fpr_tolerance``; per category, AUPRC may not fall by more than
``category_tolerance``. Recall and FPR are measured on the same rows for both models,
so a change is a count of rows whose verdict flipped (``paired_flips``): a fall or rise
beyond its tolerance counts only when those flips are more than chance, by a one-sided
sign test (McNemar's exact test) at ``significance``. Two new false positives among 175
safe rows, and none fixed, is +0.011 FPR and p = 0.25: noise, noted and passed; ten new
and none fixed (p = 0.001) fails. The candidate's report carries the flips per side as
``vs_serving``; a report without them is held to the tolerance alone. A set, side or
category with fewer than ``min_rows`` rows (or no row of a class a metric needs) cannot
show a regression, so it is reported and not counted; a validation or regression set
that small fails the gate (nothing shows the candidate is better, or no worse). Every
rule is a :class:`Check` in the result, passed or not, for the run's report.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from math import comb
from typing import Any

Report = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class GateRules:
    #: Validation AUPRC the candidate must add to the serving model's.
    margin: float = 0.01
    #: Rows a set (or side, or category) needs for its numbers to count.
    min_rows: int = 30
    auprc_tolerance: float = 0.01
    recall_tolerance: float = 0.02
    fpr_tolerance: float = 0.01
    category_tolerance: float = 0.05
    #: A recall fall or FPR rise beyond its tolerance counts when its flips have a
    #: one-sided sign-test p-value below this (1: whenever it is beyond the tolerance).
    significance: float = 0.05


@dataclass(frozen=True, slots=True)
class Check:
    rule: str
    candidate: float | None
    serving: float | None
    limit: float | None
    passed: bool
    counted: bool = True
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(report: Report | None, key: str) -> float | None:
    value = None if report is None else report.get(key)
    return None if value is None else float(value)


def _at_least(rule: str, cand: float | None, serv: float | None, tolerance: float) -> Check:
    """Candidate >= serving - tolerance (uncounted when either is missing)."""
    if cand is None or serv is None:
        return Check(rule, cand, serv, None, True, False, "not measurable on this set")
    limit = serv - tolerance
    return Check(rule, cand, serv, limit, cand >= limit - 1e-12)


def _at_most(rule: str, cand: float | None, serv: float | None, tolerance: float) -> Check:
    """Candidate <= serving + tolerance (uncounted when either is missing)."""
    if cand is None or serv is None:
        return Check(rule, cand, serv, None, True, False, "not measurable on this set")
    limit = serv + tolerance
    return Check(rule, cand, serv, limit, cand <= limit + 1e-12)


def paired_flips(
    labels: Sequence[bool],
    sides: Sequence[str],
    candidate: Sequence[bool],
    serving: Sequence[bool],
) -> dict[str, dict[str, int]]:
    """Per side, the rows whose verdict differs between the two models on the same rows:
    ``new_fp`` (safe, only the candidate flags it), ``fixed_fp`` (safe, only the serving
    model flags it), ``new_miss`` and ``fixed_miss`` (unsafe, likewise)."""
    out: dict[str, dict[str, int]] = {}
    for label, side, cand, serv in zip(labels, sides, candidate, serving, strict=True):
        f = out.setdefault(side, {"new_fp": 0, "fixed_fp": 0, "new_miss": 0, "fixed_miss": 0})
        if cand == serv:
            continue
        if label:
            f["new_miss" if serv else "fixed_miss"] += 1
        else:
            f["new_fp" if cand else "fixed_fp"] += 1
    return out


def sign_test(worse: int, better: int) -> float:
    """One-sided p-value of ``worse`` of ``worse + better`` flips going against the
    candidate if each flip were a fair coin (the exact McNemar test)."""
    n = worse + better
    return sum(comb(n, k) for k in range(worse, n + 1)) / 2**n


def _beyond_noise(check: Check, worse: int, better: int, what: str, rules: GateRules) -> Check:
    """``check`` (already beyond its tolerance) counted only if its flips are not chance."""
    p = sign_test(worse, better)
    flips = f"{worse} {what}, {better} fixed; one-sided sign test p = {p:.3g}"
    if p < rules.significance:
        return Check(check.rule, check.candidate, check.serving, check.limit, False, note=flips)
    return Check(
        check.rule,
        check.candidate,
        check.serving,
        check.limit,
        True,
        note=f"beyond the tolerance by chance only: {flips} (>= {rules.significance})",
    )


def _small(rule: str, n: int, rules: GateRules) -> Check:
    return Check(rule, None, None, None, True, False, f"{n} rows (< {rules.min_rows}): not counted")


def _set_checks(name: str, cand: Report, serv: Report, rules: GateRules) -> list[Check]:
    checks: list[Check] = []
    for side in ("user", "agent"):
        c, s = cand.get(f"{side}_side"), serv.get(f"{side}_side")
        if c is None or s is None:
            continue
        n = int(c.get("n", 0))
        if n < rules.min_rows:
            checks.append(_small(f"{name}: {side} side", n, rules))
            continue
        flips = (cand.get("vs_serving") or {}).get(side)
        if c.get("positives"):
            check = _at_least(
                f"{name}: {side} recall",
                _num(c, "recall"),
                _num(s, "recall"),
                rules.recall_tolerance,
            )
            if not check.passed and flips:
                check = _beyond_noise(
                    check, flips["new_miss"], flips["fixed_miss"], "new misses", rules
                )
            checks.append(check)
        if int(c.get("positives", 0)) < n:
            check = _at_most(
                f"{name}: {side} FPR", _num(c, "fpr"), _num(s, "fpr"), rules.fpr_tolerance
            )
            if not check.passed and flips:
                check = _beyond_noise(
                    check, flips["new_fp"], flips["fixed_fp"], "new false positives", rules
                )
            checks.append(check)
    counts = cand.get("category_rows") or {}
    for code, c_auprc in sorted((cand.get("per_category") or {}).items()):
        n = int(counts.get(code, 0))
        if n < rules.min_rows:
            checks.append(_small(f"{name}: AUPRC[{code}]", n, rules))
            continue
        s_auprc = (serv.get("per_category") or {}).get(code)
        checks.append(
            _at_least(f"{name}: AUPRC[{code}]", c_auprc, s_auprc, rules.category_tolerance)
        )
    return checks


def gate(
    candidate: Mapping[str, Report], serving: Mapping[str, Report], rules: GateRules
) -> list[Check]:
    """Every check of the gate, on the sets both reports have (``validation`` is
    required, ``regression`` when the deployment has one)."""
    checks: list[Check] = []
    cand_v, serv_v = candidate["validation"], serving["validation"]
    n = int(cand_v.get("n", 0))
    if n < rules.min_rows:
        checks.append(
            Check(
                "validation: size",
                float(n),
                None,
                float(rules.min_rows),
                False,
                note=f"{n} validation rows cannot show that the candidate is better",
            )
        )
    c, s = _num(cand_v, "auprc"), _num(serv_v, "auprc")
    if c is None or s is None:
        checks.append(
            Check("validation: AUPRC", c, s, None, False, note="needs safe and unsafe rows")
        )
    else:
        checks.append(Check("validation: AUPRC", c, s, s + rules.margin, c >= s + rules.margin))
    checks += _set_checks("validation", cand_v, serv_v, rules)
    if "regression" in candidate and "regression" in serving:
        cand_r, serv_r = candidate["regression"], serving["regression"]
        if int(cand_r.get("n", 0)) < rules.min_rows:
            n_reg = int(cand_r.get("n", 0))
            checks.append(
                Check(
                    "regression: size",
                    float(n_reg),
                    None,
                    float(rules.min_rows),
                    False,
                    note=f"{n_reg} rows: a regression set this small checks nothing",
                )
            )
        else:
            checks.append(
                _at_least(
                    "regression: AUPRC",
                    _num(cand_r, "auprc"),
                    _num(serv_r, "auprc"),
                    rules.auprc_tolerance,
                )
            )
        checks += _set_checks("regression", cand_r, serv_r, rules)
    return checks


def passed(checks: list[Check]) -> bool:
    return all(c.passed for c in checks)


def failures(checks: list[Check]) -> str:
    """The failed checks, one phrase each."""
    return "; ".join(
        f"{c.rule} {c.candidate:.4f} vs serving {c.serving:.4f} (limit {c.limit:.4f})"
        if c.candidate is not None and c.serving is not None and c.limit is not None
        else f"{c.rule}: {c.note}"
        for c in checks
        if not c.passed
    )
