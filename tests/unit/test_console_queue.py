"""The review console's queue and agreement statistics (pure logic)."""

from __future__ import annotations

from typing import Any

import pytest

from guard.events import Decision, ReviewEvent
from review_console.agreement import cohen_kappa, krippendorff_alpha, pairwise_kappa, throughput
from review_console.queue import Filters, ReviewQueue


def flagged(
    fid: str,
    reasons: tuple[str, ...] = ("unsafe",),
    tenant: str | None = "acme",
    p: float = 0.9,
    categories: tuple[str, ...] = ("O3",),
    version: str = "1",
) -> dict[str, Any]:
    return {
        "flagged_id": fid,
        "reasons": list(reasons),
        "turn": {"content": "..."},
        "context": [],
        "verdict": {
            "tenant": tenant,
            "p_unsafe": p,
            "categories": [{"code": c, "name": f"name of {c}"} for c in categories],
            "model_version": version,
            "policy_id": "llama-guard-1",
        },
    }


def review(fid: str, reviewer: str, label: str, rid: str | None = None) -> ReviewEvent:
    return ReviewEvent(
        review_id=rid or f"{fid}-{reviewer}-{label}",
        flagged_id=fid,
        label=Decision(label),
        categories=("O3",) if label == "unsafe" else (),
        reviewer=reviewer,
        reviewed_at="2026-12-01T00:00:00Z",
    )


def queue(*records: tuple[dict[str, Any], float], overlap: int = 2) -> ReviewQueue:
    q = ReviewQueue(overlap=overlap, hold_s=60)
    for record, at in records:
        q.add_flagged(record, at)
    return q


def test_oldest_or_riskiest_first_and_filters() -> None:
    q = queue(
        (flagged("a", p=0.55, tenant="acme"), 10.0),
        (flagged("b", p=0.99, tenant="acme", categories=("O1",)), 20.0),
        (flagged("c", p=0.7, tenant="globex", reasons=("audit",), version="2"), 5.0),
    )
    ids = lambda items: [i.flagged_id for i in items]  # noqa: E731
    assert ids(q.available("ann", "*", 100)) == ["c", "a", "b"]
    assert ids(q.available("ann", "*", 100, order="risk")) == ["b", "c", "a"]
    assert ids(q.available("ann", "*", 100, Filters(tenant="acme"))) == ["a", "b"]
    assert ids(q.available("ann", "*", 100, Filters(category="O1"))) == ["b"]
    assert ids(q.available("ann", "*", 100, Filters(reason="audit"))) == ["c"]
    assert ids(q.available("ann", "*", 100, Filters(model_version="2"))) == ["c"]


def test_a_reviewer_sees_only_the_tenants_of_their_account() -> None:
    q = queue((flagged("a", tenant="acme"), 1.0), (flagged("g", tenant="globex"), 2.0))
    q.add_flagged(flagged("n", tenant=None), 3.0)
    acme = frozenset({"acme"})
    assert [i.flagged_id for i in q.available("ann", acme, 10)] == ["a"]
    assert q.get("g", acme) is None and q.get("a", acme) is not None
    assert q.take("ann", acme, 10).flagged_id == "a"  # type: ignore[union-attr]
    assert [i.flagged_id for i in q.available("ann", frozenset({None}), 10)] == ["n"]


def test_an_opened_item_is_held_for_its_reviewer_until_decided_skipped_or_expired() -> None:
    q = queue((flagged("a"), 1.0), (flagged("b"), 2.0))
    first = q.take("ann", "*", 100)
    assert first is not None and first.flagged_id == "a"
    assert q.take("ann", "*", 101) is first, "a reload shows the same item"
    assert q.take("bob", "*", 101).flagged_id == "b"  # type: ignore[union-attr]
    assert q.take("cy", "*", 101) is None, "both held"
    assert q.take("cy", "*", 161).flagged_id == "a", "ann's hold expired"  # type: ignore[union-attr]
    q.skip("b", "bob", 162)
    assert [i.flagged_id for i in q.available("dan", "*", 162)] == ["b"]
    assert "b" not in [i.flagged_id for i in q.available("bob", "*", 163)], "skipped: not again"
    assert "b" in [i.flagged_id for i in q.available("bob", "*", 223)], "until hold_s passed"


def test_an_item_closes_after_its_reviews_and_a_reviewer_never_gets_it_twice() -> None:
    q = queue((flagged("a"), 1.0), (flagged("u", reasons=("uncertain",), p=0.5), 2.0))
    q.add_review(review("a", "ann", "unsafe"))
    assert [i.flagged_id for i in q.open_items()] == ["u"]
    # An uncertain item needs two reviewers (overlap 2), each once.
    q.add_review(review("u", "ann", "safe"))
    assert [i.flagged_id for i in q.available("ann", "*", 10)] == []
    assert [i.flagged_id for i in q.available("bob", "*", 10)] == ["u"]
    # They disagree: a tie waits for a third reviewer.
    q.add_review(review("u", "bob", "unsafe"))
    assert q.items["u"].is_open(q.overlap)
    assert [i.flagged_id for i in q.available("cy", "*", 10)] == ["u"]
    q.add_review(review("u", "cy", "unsafe"))
    assert q.open_items() == [] and q.items["u"].label() == (Decision.UNSAFE, ("O3",))
    # ann changes her mind: her latest decision counts, once.
    q.add_review(review("u", "ann", "unsafe", rid="u-ann-2"))
    assert len(q.items["u"].decisions) == 3


def test_redelivered_records_and_reviews_count_once_and_early_reviews_wait() -> None:
    q = ReviewQueue(overlap=2)
    q.add_review(review("late", "ann", "safe"))  # its flagged record is not read yet
    q.add_review(review("late", "ann", "safe"))
    item = q.add_flagged(flagged("late"), 5.0)
    assert item is not None and list(item.decisions) == ["ann"] and not item.is_open(2)
    q.add_flagged(flagged("late"), 9.0)  # redelivered
    assert q.items["late"].flagged_at == 5.0 and list(q.items["late"].decisions) == ["ann"]
    assert q.add_flagged({"no": "id"}, 1.0) is None


def test_queue_depth_and_the_age_of_the_oldest_open_item() -> None:
    q = queue((flagged("a"), 100.0), (flagged("b"), 130.0))
    assert q.depth_and_age(160.0) == (2, 60.0)
    q.add_review(review("a", "ann", "safe"))
    assert q.depth_and_age(160.0) == (1, 30.0)
    q.add_review(review("b", "ann", "safe"))
    assert q.depth_and_age(160.0) == (0, 0.0)


def test_kappa_and_alpha_match_their_published_examples() -> None:
    # Cohen's kappa: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> 0.4.
    pairs = [("y", "y")] * 20 + [("y", "n")] * 5 + [("n", "y")] * 10 + [("n", "n")] * 15
    assert cohen_kappa(pairs) == pytest.approx(0.4)
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability", nominal: 0.743.
    units = [
        [1, 1, 1],
        [2, 2, 3, 2],
        [3, 3, 3, 3],
        [3, 3, 3, 3],
        [2, 2, 2, 2],
        [1, 2, 3, 4],
        [4, 4, 4, 4],
        [1, 1, 2, 1],
        [2, 2, 2, 2],
        [5, 5, 5],
        [1, 1],
        [3],
    ]
    alpha = krippendorff_alpha([[str(x) for x in u] for u in units])
    assert alpha == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha([["safe", "safe"], ["unsafe", "unsafe"]]) == pytest.approx(1.0)
    assert krippendorff_alpha([["safe", "safe"]]) is None and cohen_kappa([]) is None


def test_pairwise_kappa_and_throughput_per_reviewer() -> None:
    labels = {
        "1": {"ann": "safe", "bob": "safe"},
        "2": {"ann": "unsafe", "bob": "unsafe", "cy": "safe"},
        "3": {"ann": "safe", "bob": "unsafe"},
    }
    kappas = pairwise_kappa(labels)
    assert set(kappas) == {("ann", "bob"), ("ann", "cy"), ("bob", "cy")}
    assert kappas[("ann", "bob")] == pytest.approx(
        cohen_kappa([("s", "s"), ("u", "u"), ("s", "u")])
    )
    stats = throughput({"ann": [0.0, 1800.0, 3600.0], "bob": [10.0]})
    assert [(s.reviewer, s.reviews, s.per_hour) for s in stats] == [
        ("ann", 3, 2.0),
        ("bob", 1, None),
    ]


def test_a_malformed_flagged_record_is_left_out_and_breaks_nothing() -> None:
    q = ReviewQueue()
    bad = [
        {**flagged("v"), "verdict": None},
        {**flagged("t"), "turn": "a string"},
        {**flagged("c"), "context": ["not a turn"]},
        {**flagged("r"), "reasons": "unsafe"},
        {"flagged_id": 7},
    ]
    for record in bad:
        assert q.add_flagged(record, 1.0) is None
    q.add_flagged(flagged("ok"), 2.0)
    assert [i.flagged_id for i in q.available("ann", "*", 10)] == ["ok"]


def test_a_decision_is_taken_on_an_open_item_not_held_by_others_or_to_change_ones_own() -> None:
    q = queue((flagged("a"), 1.0), (flagged("b"), 2.0), overlap=2)
    held = q.take("bob", "*", 10)
    assert held is not None and held.flagged_id == "a"
    assert not q.may_decide(q.items["a"], "ann", 11), "bob holds it and it needs one reviewer"
    assert q.may_decide(q.items["a"], "bob", 11)
    q.add_review(review("a", "bob", "safe"))
    assert not q.may_decide(q.items["a"], "ann", 11), "closed"
    assert q.may_decide(q.items["a"], "bob", 11), "bob may change his decision"
    # Taking another item lets go of the one held before (one held item per reviewer).
    assert q.take("cy", "*", 12).flagged_id == "b"  # type: ignore[union-attr]
    assert q.take("cy", "*", 12, Filters(tenant="nobody")) is None
    assert q.take("cy", "*", 13).flagged_id == "b"  # type: ignore[union-attr]
    assert q.items["b"].holders(13) == {"cy"}
