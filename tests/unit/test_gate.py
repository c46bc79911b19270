"""The promotion gate, rule by rule (training/gate.py: pure functions over reports)."""

from __future__ import annotations

from typing import Any

import pytest

from training.gate import GateRules, failures, gate, paired_flips, passed, sign_test

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


def dices_like(cand_fpr_rows: int, serv_fpr_rows: int, new: int, fixed: int) -> tuple[dict, dict]:
    """Regression reports whose agent side has 175 safe rows (and 60 unsafe), as the
    shipped set's DICES-350 replies; the candidate's carries its flips."""

    def rep(fp_rows: int) -> dict[str, Any]:
        r = report()
        r["agent_side"] = {"n": 235, "positives": 60, "recall": 0.70, "fpr": fp_rows / 175}
        return r

    cand = rep(cand_fpr_rows)
    cand["vs_serving"] = {
        "user": {"new_fp": 0, "fixed_fp": 0, "new_miss": 0, "fixed_miss": 0},
        "agent": {"new_fp": new, "fixed_fp": fixed, "new_miss": 0, "fixed_miss": 0},
    }
    return cand, rep(serv_fpr_rows)


def test_an_fpr_rise_of_two_rows_in_175_is_noise_and_passes_with_a_note() -> None:
    """The honest scenario candidate: 24 of 175 safe replies flagged against 22 (+0.011,
    over the 0.01 tolerance), from 2 new false positives and none fixed: p = 0.25."""
    checks = run(report(auprc=0.9), report(), regression=dices_like(24, 22, new=2, fixed=0))
    assert passed(checks), failures(checks)
    (fpr,) = [c for c in checks if c.rule == "regression: agent FPR"]
    assert fpr.counted and fpr.candidate > fpr.limit
    assert "by chance only" in fpr.note and "2 new false positives, 0 fixed" in fpr.note
    assert "p = 0.25" in fpr.note


def test_an_fpr_rise_the_flips_cannot_explain_by_chance_fails() -> None:
    checks = run(report(auprc=0.9), report(), regression=dices_like(32, 22, new=10, fixed=0))
    assert failed(checks) == ["regression: agent FPR"]
    (fpr,) = [c for c in checks if c.rule == "regression: agent FPR"]
    assert "p = 0.000977" in fpr.note  # 1 / 2**10
    # the same net rise made of many flips both ways is chance again
    churn = run(report(auprc=0.9), report(), regression=dices_like(32, 22, new=30, fixed=20))
    assert passed(churn), failures(churn)


def test_without_flips_or_at_significance_one_the_tolerance_alone_decides() -> None:
    cand, serv = dices_like(24, 22, new=2, fixed=0)
    del cand["vs_serving"]
    assert failed(run(report(auprc=0.9), report(), regression=(cand, serv))) == [
        "regression: agent FPR"
    ]
    strict = GateRules(significance=1.0)
    c, s = dices_like(24, 22, new=2, fixed=0)
    checks = gate(
        {"validation": report(auprc=0.9), "regression": c},
        {"validation": report(), "regression": s},
        strict,
    )
    assert failed(checks) == ["regression: agent FPR"]


def test_a_recall_fall_is_judged_on_its_missed_rows_the_same_way() -> None:
    cand, serv = report(auprc=0.9, user=(0.75, 0.05)), report()  # -0.05 > 0.02
    cand["vs_serving"] = {"user": {"new_fp": 0, "fixed_fp": 0, "new_miss": 2, "fixed_miss": 0}}
    assert passed(run(cand, serv))
    cand["vs_serving"]["user"]["new_miss"] = 9
    assert failed(run(cand, serv)) == ["validation: user recall"]


def test_paired_flips_count_rows_whose_verdict_changed_per_side() -> None:
    labels = [False, False, False, True, True, False]
    sides = ["user", "user", "user", "user", "agent", "agent"]
    cand = [True, False, False, False, True, True]
    serv = [False, True, False, True, True, True]
    assert paired_flips(labels, sides, cand, serv) == {
        "user": {"new_fp": 1, "fixed_fp": 1, "new_miss": 1, "fixed_miss": 0},
        "agent": {"new_fp": 0, "fixed_fp": 0, "new_miss": 0, "fixed_miss": 0},
    }
    assert sign_test(2, 0) == 0.25
    assert sign_test(0, 0) == 1.0
    assert sign_test(1, 1) == 0.75
    assert sign_test(10, 0) == 1 / 1024
