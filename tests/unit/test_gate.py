"""The promotion gate, rule by rule (training/gate.py: pure functions over reports)."""

from __future__ import annotations

from typing import Any

import pytest

from training.gate import GateRules, failures, gate, passed

RULES = GateRules(
    margin=0.01,
    min_rows=30,
    auprc_tolerance=0.01,
    recall_tolerance=0.02,
    fpr_tolerance=0.01,
    category_tolerance=0.05,
)


def report(
    n: int = 200,
    auprc: float = 0.80,
    user: tuple[float, float] = (0.80, 0.05),
    agent: tuple[float, float] | None = (0.70, 0.05),
    categories: dict[str, tuple[float, int]] | None = None,
) -> dict[str, Any]:
    """A report with ``user`` / ``agent`` = (recall, FPR) at the threshold, half the rows
    on each side, a third of them unsafe; ``categories`` = code -> (AUPRC, rows)."""
    r: dict[str, Any] = {"n": n, "positives": n // 3, "auprc": auprc}
    sides = {"user": user, "agent": agent}
    for side, numbers in sides.items():
        if numbers is not None:
            m = n // 2 if agent is not None else n
            r[f"{side}_side"] = {
                "n": m,
                "positives": m // 3,
                "recall": numbers[0],
                "fpr": numbers[1],
            }
    cats = categories or {}
    r["per_category"] = {c: a for c, (a, _) in cats.items()}
    r["category_rows"] = {c: k for c, (_, k) in cats.items()}
    return r


def run(cand: dict[str, Any], serv: dict[str, Any], **sets: tuple[dict[str, Any], dict[str, Any]]):
    c = {"validation": cand, **{k: v[0] for k, v in sets.items()}}
    s = {"validation": serv, **{k: v[1] for k, v in sets.items()}}
    return gate(c, s, RULES)


def failed(checks) -> list[str]:
    return [c.rule for c in checks if not c.passed]


def test_a_candidate_better_on_validation_and_no_worse_elsewhere_passes() -> None:
    checks = run(report(auprc=0.85), report(), regression=(report(), report()))
    assert passed(checks), failures(checks)
    assert {c.rule for c in checks} >= {
        "validation: AUPRC",
        "validation: user recall",
        "validation: agent FPR",
        "regression: AUPRC",
        "regression: user recall",
    }


def test_validation_auprc_must_beat_the_serving_model_by_the_margin() -> None:
    assert failed(run(report(auprc=0.805), report(auprc=0.80))) == ["validation: AUPRC"]
    assert passed(run(report(auprc=0.81), report(auprc=0.80)))


def test_a_validation_split_too_small_fails_whatever_it_says() -> None:
    checks = run(report(n=20, auprc=0.99), report(n=20, auprc=0.5))
    assert "validation: size" in failed(checks)
    assert "20 validation rows cannot show" in failures(checks)


def test_regression_set_auprc_may_drop_only_by_the_tolerance() -> None:
    better = report(auprc=0.9)
    assert failed(run(better, report(), regression=(report(auprc=0.785), report(auprc=0.80)))) == [
        "regression: AUPRC"
    ]
    assert passed(run(better, report(), regression=(report(auprc=0.791), report(auprc=0.80))))


@pytest.mark.parametrize(
    ("cand", "rule"),
    [
        ({"user": (0.77, 0.05)}, "regression: user recall"),  # -0.03 > 0.02
        ({"user": (0.80, 0.065)}, "regression: user FPR"),  # +0.015 > 0.01
        ({"agent": (0.60, 0.05)}, "regression: agent recall"),
        ({"agent": (0.70, 0.10)}, "regression: agent FPR"),
    ],
)
def test_per_side_recall_and_fpr_at_the_threshold_have_their_tolerances(
    cand: dict[str, Any], rule: str
) -> None:
    checks = run(report(auprc=0.9), report(), regression=(report(**cand), report()))
    assert failed(checks) == [rule]


def test_a_category_may_not_lose_more_than_its_tolerance() -> None:
    serv = report(categories={"O3": (0.80, 60), "O4": (0.80, 60)})
    ok = report(auprc=0.9, categories={"O3": (0.76, 60), "O4": (0.90, 60)})
    worse = report(auprc=0.9, categories={"O3": (0.70, 60), "O4": (0.90, 60)})
    assert passed(run(ok, serv))
    assert failed(run(worse, serv)) == ["validation: AUPRC[O3]"]


def test_a_side_or_category_with_too_few_rows_is_reported_not_counted() -> None:
    serv = report(categories={"O5": (0.9, 4)})
    cand = report(auprc=0.9, categories={"O5": (0.1, 4)})
    checks = run(cand, serv)
    assert passed(checks)
    (o5,) = [c for c in checks if c.rule == "validation: AUPRC[O5]"]
    assert not o5.counted and "4 rows" in o5.note
    one_sided = run(report(auprc=0.9, n=40, agent=None), report(n=40, agent=None))
    assert passed(one_sided) and not any("agent" in c.rule for c in one_sided)


def test_validation_without_both_labels_fails() -> None:
    cand, serv = report(), report()
    cand["auprc"] = serv["auprc"] = None
    assert failed(run(cand, serv)) == ["validation: AUPRC"]


def test_a_regression_set_too_small_fails_instead_of_checking_nothing() -> None:
    checks = run(report(auprc=0.9), report(), regression=(report(n=3), report(n=3)))
    assert "regression: size" in failed(checks)
