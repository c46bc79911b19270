"""Streamed replies: the verdict events of a stream and the client's release rule
(pure parts of stream_app/reply_moderation.py and stream_app/client.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from guard.conversation import Role, Turn
from guard.events import (
    Decision,
    EventError,
    FailClosed,
    ReplyChunk,
    decode_reply_chunk,
    now_rfc3339,
)
from guard.protocol import Classification, ItemAnswer
from guard.reply_stream import ReplyAssembler
from guard.settings import Settings
from guard.taxonomy import LLAMA_GUARD_1
from stream_app.client import ReplyState, ReplyStopped
from stream_app.reply_moderation import ReplyStream, last_verdict, window_verdict
from stream_app.routing import fail_closed_verdict


def stream(tenant: str | None = "acme") -> ReplyStream:
    s = ReplyStream(
        key=(tenant, "s1"),
        conversation_id="c1",
        policy_id=None,
        timestamp=now_rfc3339(),
        assembler=ReplyAssembler(10_000),
        opened=0.0,
        last_seen=0.0,
        context=(Turn(Role.USER, "hi"),),
    )
    s.assembler.add(0, "Hello there, friend.", False)
    return s


def answer(unsafe: bool, p: float) -> Classification:
    cats = (LLAMA_GUARD_1.categories[2].ref,) if unsafe else ()
    return Classification(ItemAnswer(p, unsafe, cats, False, LLAMA_GUARD_1.ref), "guard", "3", 4.0)


def test_a_window_verdict_is_safe_or_a_stop_and_its_id_depends_on_what_was_judged() -> None:
    st = stream()
    safe = window_verdict(st, 0, (0, 12), "window:abc", answer(False, 0.1), 5)
    again = window_verdict(st, 0, (0, 12), "window:abc", answer(False, 0.1), 5)
    other = window_verdict(st, 0, (0, 12), "window:abd", answer(False, 0.1), 5)
    assert safe.verdict is Decision.SAFE and not safe.stop and not safe.final
    assert safe.verdict_id == again.verdict_id != other.verdict_id
    elsewhere = window_verdict(stream("globex"), 0, (0, 12), "window:abc", answer(False, 0.1), 5)
    assert elsewhere.verdict_id != safe.verdict_id, "another tenant's stream, another id"
    assert (safe.released, safe.tenant, safe.model_version) == (5, "acme", "3")
    stop = window_verdict(st, 1, (8, 20), "window:x", answer(True, 0.9), 5)
    assert stop.stop and stop.verdict is Decision.UNSAFE and stop.categories
    d = stop.to_dict()
    assert d["stream_id"] == "s1" and d["window"] == 1 and d["categories"][0]["code"] == "O3"


def test_the_last_verdict_releases_the_reply_only_when_the_whole_is_safe() -> None:
    st = stream()
    st.released = 6
    turn = st.turn(st.assembler.text)
    failed = fail_closed_verdict(turn, FailClosed.STREAM_ABANDONED, "guard")
    stop = last_verdict(st, failed, st.assembler.text, stop=True)
    assert stop.stop and not stop.final and stop.released == 6
    assert stop.fail_closed is FailClosed.STREAM_ABANDONED
    assert turn.event_id == "s1" and turn.role is Role.AGENT and turn.turn_index == 1


def test_hold_back_shows_only_released_text_and_low_latency_shows_it_at_once() -> None:
    held, fast = ReplyState("hold_back"), ReplyState("low_latency")
    for state in (held, fast):
        state.text = "Sure. Here is"
    assert held.take() == "" and fast.take() == "Sure. Here is"
    held.on_verdict({"stop": False, "final": False, "released": 6})
    assert held.take() == "Sure. " and held.take() == ""
    held.text += " how."
    held.on_verdict({"stop": False, "final": True, "released": len(held.text)})
    assert held.take() == "Here is how."


def test_a_stop_raises_and_never_releases_more() -> None:
    state = ReplyState("hold_back")
    state.text = "Sure. Here is how to"
    state.on_verdict({"stop": False, "final": False, "released": 6})
    stop = {
        "stream_id": "s",
        "stop": True,
        "final": False,
        "released": 6,
        "categories": [{"code": "O3", "name": "x"}],
    }
    state.on_verdict(stop)
    state.on_verdict({"stop": False, "final": False, "released": 20})  # late, out of order
    with pytest.raises(ReplyStopped, match="O3"):
        state.take()
    assert state.released == 6 and state.shown == 0
    fast = ReplyState("low_latency")
    fast.text = "abc"
    fast.on_verdict({**stop, "fail_closed": "stream_abandoned"})
    with pytest.raises(ReplyStopped, match="stream_abandoned"):
        fast.take()


def test_chunk_zero_carries_the_turn_index_and_bad_ones_are_refused() -> None:
    chunk = ReplyChunk(
        "s", "c", 0, "Hi", False, now_rfc3339(), context=(Turn(Role.USER, "q"),), turn_index=3
    )
    back = decode_reply_chunk(chunk.to_json(), 100)
    assert back == chunk
    raw = chunk.to_json().replace(b'"turn_index":3', b'"turn_index":-2')
    with pytest.raises(EventError, match="turn_index"):
        decode_reply_chunk(raw, 100)


def test_windows_must_advance() -> None:
    with pytest.raises(ValidationError, match="overlap_tokens"):
        Settings(streams={"window_tokens": 16, "overlap_tokens": 16})  # type: ignore[arg-type]
    assert Settings().streams.window_tokens > Settings().streams.overlap_tokens
