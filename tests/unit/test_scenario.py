"""The review-loop scenario's own logic (training/scenario.py): its split and its
scripted reviewer. The scenario itself runs the whole stack (docs/retraining.md)."""

from __future__ import annotations

from typing import Any

import pytest

from guard.conversation import Role, Turn
from guard.events import Decision, decode_review
from training.dataset import Example
from training.scenario import (
    FALLBACK_CODE,
    HELD_OUT,
    KEY,
    REVIEWER,
    _reviews,
    _turns,
    chat_id,
    gain_per_1000_reviews,
    split_rows,
)


def _row(i: int, conversation: str) -> dict[str, Any]:
    return {"id": f"r{i}", "conversation_id": conversation}


def test_traffic_and_held_out_slice_never_share_a_conversation() -> None:
    rows = [_row(i, f"q{i % 40}") for i in range(2000)]
    traffic, held = split_rows(rows, 500)
    assert len(traffic) == 500 and len(held) == HELD_OUT
    assert not {r["conversation_id"] for r in traffic} & {r["conversation_id"] for r in held}
    assert split_rows(rows, 500) == (traffic, held)  # the same every run


def test_each_reply_is_sent_in_a_chat_of_its_own() -> None:
    """Replies to one question are different users' chats: the reviews' split (which keeps
    a conversation whole) spreads them over train, validation and calibration, instead
    of putting each question's replies all in one."""
    rows = [
        {
            "id": f"r{i}",
            "conversation_id": "q7",
            "conversation": [
                {"role": "user", "content": "the question"},
                {"role": "agent", "content": f"reply {i}"},
            ],
        }
        for i in range(3)
    ]
    turns = _turns(rows)
    assert [t.conversation_id for t in turns] == [chat_id(r) for r in rows]
    assert len({t.conversation_id for t in turns}) == 3
    assert all(t.conversation_id.startswith("q7/") for t in turns)  # the source's id kept
    assert [t.event_id for t in turns] == ["r0", "r1", "r2"]
    assert all(
        t.role is Role.AGENT and t.context == (Turn(Role.USER, "the question"),) for t in turns
    )


def _flagged(event_id: str) -> dict[str, Any]:
    return {"flagged_id": f"f-{event_id}", "turn": {"event_id": event_id}}


def test_the_scripted_reviewer_signs_labels_and_poisoned_reverses_them() -> None:
    turn = (Turn(Role.USER, "q"), Turn(Role.AGENT, "a"))
    gold = {
        "harm": Example("harm", "c1", turn, True, ("O4",)),
        "harm-no-code": Example("harm-no-code", "c2", turn, True, ()),
        "fine": Example("fine", "c3", turn, False, ()),
    }
    flagged = [_flagged(e) for e in (*gold, "not-in-traffic")]
    honest = [decode_review(r) for r in _reviews(flagged, gold, poisoned=False)]
    poisoned = [decode_review(r) for r in _reviews(flagged, gold, poisoned=True)]
    assert [(r.label, r.categories) for r in honest] == [
        (Decision.UNSAFE, ("O4",)),
        (Decision.UNSAFE, (FALLBACK_CODE,)),  # a review needs a category
        (Decision.SAFE, ()),
    ]
    assert [r.label for r in poisoned] == [Decision.SAFE, Decision.SAFE, Decision.UNSAFE]
    for r in honest + poisoned:
        assert r.reviewer == REVIEWER and r.signed_by(KEY.encode())


def test_gain_per_thousand_reviews() -> None:
    assert gain_per_1000_reviews({"auprc": 0.70}, {"auprc": 0.85}, 300) == pytest.approx(0.5)


def test_the_cli_and_the_module_take_the_same_arguments() -> None:
    """`guardstream scenario` declares its arguments without importing the scenario
    (every command builds the parser): they must stay those of the module."""
    import argparse

    from guardstream_cli.main import build_parser
    from training.scenario import add_arguments

    module = argparse.ArgumentParser()
    add_arguments(module)
    cli = build_parser().parse_args(["scenario"])
    assert {k: v for k, v in vars(cli).items() if k not in ("command", "func")} == vars(
        module.parse_args([])
    )
