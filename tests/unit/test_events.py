import orjson
import pytest

from guard.conversation import Role, Turn
from guard.events import (
    ChatTurn,
    DeadLetter,
    EventError,
    ReviewReason,
    conversation_for,
    decode_chat_turn,
    review_reasons,
    verdict_id,
)

GOOD = {
    "schema_version": 1,
    "event_id": "e1",
    "conversation_id": "c1",
    "turn_index": 2,
    "role": "agent",
    "content": "hello",
    "timestamp": "2026-11-28T10:00:00Z",
    "tenant": "acme",
    "policy_id": "llama-guard-1",
    "context": [{"role": "user", "content": "hi"}],
}


def test_round_trip_of_a_full_chat_turn() -> None:
    turn = decode_chat_turn(orjson.dumps(GOOD), 1000)
    assert turn.role is Role.AGENT and turn.tenant == "acme"
    assert turn.context == (Turn(Role.USER, "hi"),)
    assert orjson.loads(turn.to_json()) == GOOD


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"turn_index": True}, "must be int"),
        ({"turn_index": -1}, ">= 0"),
        ({"content": "   "}, "content is empty"),
        ({"event_id": ""}, "must not be empty"),
        ({"timestamp": "2026-11-28T10:00:00"}, "needs a time zone"),
        ({"context": [{"role": "bot", "content": "x"}]}, "context[0] must be"),
        ({"context": "hi"}, "field 'context' must be list"),
        ({"tenant": 5}, "field 'tenant' must be str"),
    ],
)
def test_bad_fields_are_named(change: dict[str, object], reason: str) -> None:
    with pytest.raises(EventError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        decode_chat_turn(orjson.dumps({**GOOD, **change}), 1000)


def test_size_limit_counts_utf8_bytes() -> None:
    raw = orjson.dumps({**GOOD, "content": "é" * 6})  # 12 bytes
    with pytest.raises(EventError, match="12 bytes, over the limit of 10"):
        decode_chat_turn(raw, 10)


def test_verdict_id_is_deterministic_and_depends_on_model_and_policy() -> None:
    a = verdict_id("e1", "guard", "1", "llama-guard-1@1")
    assert a == verdict_id("e1", "guard", "1", "llama-guard-1@1")
    assert a != verdict_id("e1", "guard", "2", "llama-guard-1@1")
    assert a != verdict_id("e1", "guard", "1", "llama-guard-1@2")
    assert a != verdict_id("e2", "guard", "1", "llama-guard-1@1")


def test_review_reasons() -> None:
    band = (0.35, 0.65)
    assert review_reasons(False, False, 0.1, band) == ()
    assert review_reasons(False, False, 0.4, band) == (ReviewReason.UNCERTAIN,)
    assert review_reasons(True, False, 0.9, band) == (ReviewReason.UNSAFE,)
    assert review_reasons(True, True, 0.5, band) == (
        ReviewReason.UNSAFE,
        ReviewReason.PARSE_ERROR,
        ReviewReason.UNCERTAIN,
    )


def _turn(role: Role, context: tuple[Turn, ...] | None = None) -> ChatTurn:
    return ChatTurn("e", "c", 3, role, "now", "2026-11-28T10:00:00Z", context=context)


def test_conversation_for_prefers_event_context_and_caps_it() -> None:
    history = (Turn(Role.USER, "cached"),)
    ctx = tuple(Turn(Role.USER, str(i)) for i in range(5))
    assert conversation_for(_turn(Role.AGENT, ctx), history, 2) == (
        Turn(Role.USER, "3"),
        Turn(Role.USER, "4"),
        Turn(Role.AGENT, "now"),
    )
    assert conversation_for(_turn(Role.AGENT), history, 8) == (
        Turn(Role.USER, "cached"),
        Turn(Role.AGENT, "now"),
    )
    assert conversation_for(_turn(Role.USER), history, 0) == (Turn(Role.USER, "now"),)


def test_agent_turn_without_any_user_turn_gets_a_placeholder() -> None:
    turns = conversation_for(_turn(Role.AGENT), (), 8)
    assert turns[0] == Turn(Role.USER, "[earlier conversation unavailable]")
    assert turns[-1] == Turn(Role.AGENT, "now")


def test_dead_letter_keeps_the_original_bytes() -> None:
    dl = orjson.loads(DeadLetter("bad", "t", 1, 7, b"\xff\x00", b"k").to_json())
    assert (dl["reason"], dl["source_topic"], dl["partition"], dl["offset"]) == ("bad", "t", 1, 7)
    assert dl["original_b64"] == "/wA=" and dl["key_b64"] == "aw=="
