"""The promotion gate: is a candidate at least as good as the serving model, everywhere?

Pure functions over evaluation reports (``training.evaluate.report_from_scores``) of the
candidate and the serving model on the same evaluation sets, named by their role:

* ``validation``: the reviewed turns held out of training (and the audit sample, once
  there is one). The candidate must beat the serving model's AUPRC by ``margin``.
* ``regression``: a fixed set that ships with the deployment (public held-out data,
  never trained on). The candidate may not lose more than ``auprc_tolerance`` of AUPRC.

On every set, per side (user prompts, agent replies) at the operating threshold, recall
may not fall by more than ``recall_tolerance`` nor the false-positive rate rise by more
than ``fpr_tolerance``; per category, AUPRC may not fall by more than
``category_tolerance``. A set, side or category with fewer than ``min_rows`` rows (or no
row of a class a metric needs) cannot show a regression, so it is reported and not
counted; a validation or regression set that small fails the gate (nothing shows the
candidate is better, or no worse). Every rule is a :class:`Check` in the result,
passed or not, for the run's report.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
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
        if c.get("positives"):
            checks.append(
                _at_least(
                    f"{name}: {side} recall",
                    _num(c, "recall"),
                    _num(s, "recall"),
                    rules.recall_tolerance,
                )
            )
        if int(c.get("positives", 0)) < n:
            checks.append(
                _at_most(f"{name}: {side} FPR", _num(c, "fpr"), _num(s, "fpr"), rules.fpr_tolerance)
            )
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
