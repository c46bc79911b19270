import base64
import hashlib
import uuid
from pathlib import Path

import orjson
import pytest

from guard.conversation import Role, Turn
from guard.events import (
    VERDICT_NAMESPACE,
    ChatTurn,
    DeadLetter,
    EventError,
    FailClosed,
    Unjudgeable,
    VerdictEvent,
    decode_chat_turn,
    verdict_id,
)
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
        ({"timestamp": "2026-11-28T10:00:00." + "1" * 600 + "Z"}, "over 64"),
    ],
)
def test_bad_fields_are_named(change: dict[str, object], reason: str) -> None:
    with pytest.raises(EventError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        decode_chat_turn(orjson.dumps({**GOOD, **change}), 1000)


def test_size_limit_counts_utf8_bytes() -> None:
    raw = orjson.dumps({**GOOD, "content": "é" * 6})  # 12 bytes
    with pytest.raises(EventError, match="12 bytes, over the limit of 10"):
        decode_chat_turn(raw, 10)


def test_verdict_id_is_deterministic_and_depends_on_model_policy_and_basis() -> None:
    lg1 = PolicyRef("llama-guard-1", "1")
    a = verdict_id("e1", "guard", "1", lg1, "ctx")
    assert a == verdict_id("e1", "guard", "1", lg1, "ctx")
    assert a != verdict_id("e1", "guard", "2", lg1, "ctx")
    assert a != verdict_id("e1", "guard", "1", PolicyRef("llama-guard-1", "2"), "ctx")
    assert a != verdict_id("e2", "guard", "1", lg1, "ctx")
    assert a != verdict_id("e1", "guard", "1", lg1, "other context")
    # The id's input is written out, so ids stay the same across releases.
    assert a == str(uuid.uuid5(VERDICT_NAMESPACE, "e1|guard:1|llama-guard-1@1|ctx"))


def test_a_turn_too_large_to_judge_is_still_addressable() -> None:
    raw = orjson.dumps({**GOOD, "content": "x" * 1001})
    with pytest.raises(Unjudgeable, match="1001 bytes, over the limit of 1000") as exc:
        decode_chat_turn(raw, 1000)
    assert exc.value.reason is FailClosed.TOO_LARGE
    assert (exc.value.turn.event_id, exc.value.turn.tenant) == ("e1", "acme")
    big_context = [{"role": "user", "content": "c" * 1000}] * 4
    with pytest.raises(Unjudgeable) as exc:
        decode_chat_turn(orjson.dumps({**GOOD, "context": big_context}), 1000)
    assert exc.value.reason is FailClosed.CONTEXT_TOO_LARGE


def test_a_malformed_turn_is_not_addressable_even_when_large() -> None:
    raw = orjson.dumps({**GOOD, "content": "x" * 5000, "timestamp": "yesterday"})
    with pytest.raises(EventError) as exc:
        decode_chat_turn(raw, 1000)
    assert not isinstance(exc.value, Unjudgeable)


def test_dead_letter_keeps_the_original_bytes() -> None:
    dl = orjson.loads(DeadLetter("bad", "t", 1, 7, b"\xff\x00", b"k").to_json())
    assert (dl["reason"], dl["source_topic"], dl["partition"], dl["offset"]) == ("bad", "t", 1, 7)
    assert dl["original_b64"] == "/wA=" and dl["key_b64"] == "aw=="


def test_dead_letters_are_cut_to_fit_and_say_what_was_cut() -> None:
    original = bytes(range(256)) * 4000  # 1,024,000 bytes
    record = DeadLetter("too big", "t", 0, 1, original, b"k" * 5000).to_json(max_bytes=300_000)
    assert len(record) <= 300_000
    dl = orjson.loads(record)
    assert dl["original_truncated"] is True and dl["original_size"] == len(original)
    assert dl["original_sha256"] == hashlib.sha256(original).hexdigest()
    assert original.startswith(base64.b64decode(dl["original_b64"]))
    assert "key_truncated" not in dl  # a key this small is kept whole
    small = orjson.loads(DeadLetter("r", "t", 0, 1, b"abc").to_json(max_bytes=300_000))
    assert small["original_b64"] == "YWJj" and "original_truncated" not in small


def test_flagged_events_are_cut_to_fit_and_keep_the_verdict() -> None:
    from guard.events import FlaggedEvent

    turn = decode_chat_turn(orjson.dumps({**GOOD, "content": "\x01" * 900}), 1000)
    context = tuple(Turn(Role.USER, "c" * 5000) for _ in range(10))
    verdict = _verdict(turn)
    full = FlaggedEvent(verdict, turn, context).to_json()
    cut = FlaggedEvent(verdict, turn, context).to_json(max_bytes=20_000)
    assert len(full) > 20_000 >= len(cut)
    doc = orjson.loads(cut)
    assert doc["verdict"] == verdict.to_dict() and doc["turn_context_omitted"] is True
    assert 0 < doc["context_dropped"] < 10 and doc["turn"]["content"] == turn.content
    tiny = orjson.loads(FlaggedEvent(verdict, turn, context).to_json(max_bytes=2_500))
    assert tiny["content_truncated"]["size"] == 900 and tiny["context"] == []


def _verdict(turn: ChatTurn) -> VerdictEvent:
    from guard.protocol import Classification, ItemAnswer
    from stream_app.routing import verdict_for

    answer = ItemAnswer(0.9, True, (), False, PolicyRef("llama-guard-1", "1"))
    return verdict_for(
        turn, Classification(answer, "guard", "1", 1.0), turn.context or (), (0.35, 0.65)
    )


def test_ids_are_bounded() -> None:
    for name in ("event_id", "conversation_id", "tenant", "policy_id"):
        with pytest.raises(EventError, match=f"'{name}' is 257 characters, over the limit"):
            decode_chat_turn(orjson.dumps({**GOOD, name: "x" * 257}), 1000)
    assert decode_chat_turn(orjson.dumps({**GOOD, "conversation_id": "x" * 256}), 1000)


def test_dead_letters_keep_the_original_timestamp_and_headers_within_bounds() -> None:
    headers = tuple((f"h{i}", b"v" * 100) for i in range(100))
    dl = DeadLetter(
        "r", "t", 0, 1, b"x", None, original_timestamp=1764500000.5, original_headers=headers
    )
    doc = orjson.loads(dl.to_json(max_bytes=300_000))
    assert doc["original_timestamp"] == 1764500000.5
    assert doc["original_headers"][0] == {
        "name": "h0",
        "value_b64": base64.b64encode(b"v" * 100).decode(),
    }
    assert len(doc["original_headers"]) == 64 and doc["original_headers_dropped"] == 36


def test_the_produce_command_sends_a_too_large_turn_but_refuses_a_malformed_one(
    tmp_path: Path,
) -> None:
    from stream_app.kafka_io import read_turns

    big = tmp_path / "big.jsonl"
    big.write_bytes(orjson.dumps({**GOOD, "content": "x" * 2000}) + b"\n")
    ((key, value),) = read_turns(big, 1000, 10_000)  # the worker answers it: fail-closed
    assert key == b"c1" and orjson.loads(value)["content"] == "x" * 2000
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(orjson.dumps({**GOOD, "role": "system"}) + b"\n")
    with pytest.raises(EventError, match=r"bad\.jsonl:1: field 'role'"):
        read_turns(bad, 1000, 10_000)
    # over the topic's record limit: Kafka cannot carry it, so a clear error, not a send
    with pytest.raises(EventError, match=r"big\.jsonl:1: the record is .* over the topic's limit"):
        read_turns(big, 1000, 1500)
