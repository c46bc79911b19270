import uuid

import orjson
import pytest

from guard.conversation import Role, Turn
from guard.events import VERDICT_NAMESPACE, DeadLetter, EventError, decode_chat_turn, verdict_id
from guard.taxonomy import PolicyRef

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
        ({"context": [{"role": "bot", "content": "x"}]}, "context[0].role must be"),
        ({"context": [{"role": "user"}]}, "context[0] must be"),
        ({"role": "system"}, "field 'role' must be 'user' or 'agent', got 'system'"),
        ({"role": None}, "missing field 'role'"),
        ({"role": 1}, "field 'role' must be str"),
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
    lg1 = PolicyRef("llama-guard-1", "1")
    a = verdict_id("e1", "guard", "1", lg1)
    assert a == verdict_id("e1", "guard", "1", lg1)
    assert a != verdict_id("e1", "guard", "2", lg1)
    assert a != verdict_id("e1", "guard", "1", PolicyRef("llama-guard-1", "2"))
    assert a != verdict_id("e2", "guard", "1", lg1)
    # The id's input is written out, so ids stay the same across releases.
    assert a == str(uuid.uuid5(VERDICT_NAMESPACE, "e1|guard:1|llama-guard-1@1"))


def test_dead_letter_keeps_the_original_bytes() -> None:
    dl = orjson.loads(DeadLetter("bad", "t", 1, 7, b"\xff\x00", b"k").to_json())
    assert (dl["reason"], dl["source_topic"], dl["partition"], dl["offset"]) == ("bad", "t", 1, 7)
    assert dl["original_b64"] == "/wA=" and dl["key_b64"] == "aw=="
