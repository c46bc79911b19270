import orjson
import pytest

from guard.events import Decision
from guard.taxonomy import LLAMA_GUARD_1
from tests.unit.test_dataset import flagged, review
from training.review import parse_decision, pending, review_loop


def test_pending_skips_reviewed_and_repeated_turns() -> None:
    items = pending(
        [flagged("a"), flagged("b"), flagged("a"), b"junk"],
        [review("b", "safe", [], "2026-11-28T10:00:00Z")],
    )
    assert [i["flagged_id"] for i in items] == ["a"]


def test_parse_decision() -> None:
    assert parse_decision("s", LLAMA_GUARD_1) == (Decision.SAFE, ())
    assert parse_decision("unsafe O3, O5", LLAMA_GUARD_1) == (Decision.UNSAFE, ("O3", "O5"))
    with pytest.raises(ValueError, match="name the violated categories"):
        parse_decision("u", LLAMA_GUARD_1)
    with pytest.raises(ValueError, match="unknown categories O9"):
        parse_decision("u O9", LLAMA_GUARD_1)
    with pytest.raises(ValueError, match="not understood"):
        parse_decision("maybe", LLAMA_GUARD_1)


def test_loop_records_each_decision_and_retries_bad_input() -> None:
    answers = iter(["u O9", "u O3", "k", "s", "q"])
    recorded = []
    items = pending([flagged(x) for x in "abcd"], [])
    n = review_loop(
        items,
        lambda _: LLAMA_GUARD_1,
        "ann",
        lambda _: next(answers),
        lambda _: None,
        recorded.append,
    )
    assert n == 2
    assert [(r.flagged_id, r.label, r.categories) for r in recorded] == [
        ("a", Decision.UNSAFE, ("O3",)),
        ("c", Decision.SAFE, ()),
    ]


def test_an_item_under_an_unknown_policy_is_skipped_not_fatal() -> None:
    """A turn that failed closed on an unknown policy id reaches review with that id."""
    from guard.taxonomy import PolicyRegistry

    odd = orjson.loads(flagged("a"))
    odd["verdict"]["policy_id"] = "no-such-policy"
    items = pending([orjson.dumps(odd), flagged("b")], [])
    said: list[str] = []
    recorded: list[object] = []
    answers = iter(["s", "q"])
    n = review_loop(
        items, PolicyRegistry().get, "ann", lambda _: next(answers), said.append, recorded.append
    )
    assert n == 1 and [r.flagged_id for r in recorded] == ["b"]  # type: ignore[attr-defined]
    assert "skipped" in said[0] and "no-such-policy" in said[0]
