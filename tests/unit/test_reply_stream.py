"""Streamed replies: assembling chunks, windows scored once, what hold-back releases
(guard/reply_stream.py)."""

from __future__ import annotations

import random

import orjson
import pytest

from guard.conversation import Role
from guard.events import EventError, decode_reply_chunk
from guard.reply_stream import ReplyAssembler, StreamError, plan_windows, releasable, tokens


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_tokens_are_words_with_the_spaces_before_them() -> None:
    text = "Hello,  world\nagain "
    spans = tokens(text)
    assert [text[a:b] for a, b in spans] == ["Hello,", "  world", "\nagain"]


@pytest.mark.parametrize(("window", "overlap"), [(8, 2), (8, 0), (5, 4), (1, 0)])
def test_a_reply_grown_chunk_by_chunk_is_judged_in_windows_each_scored_once(
    window: int, overlap: int
) -> None:
    """Whatever the chunking, the windows planned as the reply grows are exactly the
    windows of the whole reply: each scored once, together covering every token, and
    each token in at most ceil(window / step) windows."""
    text = words(53) + "."
    rng = random.Random(window * 10 + overlap)
    cuts = sorted(rng.sample(range(1, len(text)), 15))
    judged: list = []
    for end in [*cuts, len(text)]:
        judged += plan_windows(text[:end], end == len(text), window, overlap, len(judged))
    assert judged == plan_windows(text, True, window, overlap, 0)
    assert [w.index for w in judged] == list(range(len(judged)))
    n = len(tokens(text))
    covered = [0] * n
    for w in judged:
        assert w.last - w.first <= window
        for t in range(w.first, w.last):
            covered[t] += 1
    step = window - overlap
    assert min(covered) >= 1 and max(covered) <= -(-window // step)
    assert judged[-1].end == len(text)


def test_a_word_still_growing_at_the_end_is_not_judged_yet() -> None:
    assert plan_windows("one two thr", False, 3, 0, 0) == []
    (w,) = plan_windows("one two thr ", False, 3, 0, 0)
    assert (w.first, w.last, w.end) == (0, 3, len("one two thr"))
    (w,) = plan_windows("one two thr", True, 3, 0, 0)  # the reply ended: it is complete
    assert w.end == len("one two thr")


def test_an_empty_final_reply_has_no_window() -> None:
    assert plan_windows("", True, 4, 1, 0) == []
    assert plan_windows("   ", True, 4, 1, 0) == []


def test_hold_back_releases_only_tokens_every_window_of_which_was_judged_safe() -> None:
    """A harmful sentence straddling windows 0 and 1 (the overlap) is not shown after
    window 0 alone: release stops where window 1 starts."""
    window, overlap = 6, 2
    text = words(9) + " "  # 9 complete tokens; windows [0,6) and [4,10) once 10 exist
    assert releasable(text, False, window, overlap, 0) == 0
    cut = releasable(text, False, window, overlap, 1)
    assert text[:cut] == words(4)  # window 1 starts at token 4
    spans = tokens(text)
    for w in plan_windows(text + "w9 w10 w11 ", False, window, overlap, 0):
        # no released token lies in a window not yet judged
        if w.index >= 1:
            assert spans[w.first][0] >= cut
    # With a lag, the text of a window waits for the windows after it.
    longer = words(30) + " "
    starts = [
        spans_[w.first][0]
        for spans_ in [tokens(longer)]
        for w in plan_windows(longer, False, window, overlap, 0)
    ]
    for judged in range(1, len(starts)):
        assert releasable(longer, False, window, overlap, judged, lag=1) == starts[judged - 1]
        assert releasable(longer, False, window, overlap, judged, lag=2) == (
            starts[judged - 2] if judged >= 2 else 0
        )
    assert releasable(longer, False, window, overlap, 1, lag=1) == 0
    final = words(12)
    n_windows = len(plan_windows(final, True, window, overlap, 0))
    # Once the reply is final and every window judged safe, all of it, whatever the lag
    # (the worker releases that with the whole reply's final verdict).
    assert releasable(final, True, window, overlap, n_windows, lag=2) == len(final)
    assert releasable(final, True, window, overlap, n_windows) == len(final)
    assert releasable(final, True, window, overlap, n_windows - 1) < len(final)


def test_chunks_out_of_order_and_repeated_assemble_the_same_reply() -> None:
    chunks = [(i, f"part{i} ", i == 9) for i in range(10)]
    shuffled = chunks + chunks[3:6]
    random.Random(0).shuffle(shuffled)
    a = ReplyAssembler(max_bytes=10_000)
    for c in shuffled:
        a.add(*c)
    assert a.complete and a.text == "".join(d for _, d, _ in chunks)
    assert not a.pending


def test_a_chunk_resent_with_other_text_fails_the_stream() -> None:
    a = ReplyAssembler(max_bytes=1000)
    a.add(0, "I can help. ", False)
    with pytest.raises(StreamError, match="other content"):
        a.add(0, "Sure, here is how to ", False)


@pytest.mark.parametrize(
    ("chunks", "message"),
    [
        ([(0, "a", True), (1, "b", False)], "after the final"),
        ([(2, "c", False), (1, "b", True)], "before chunks already received"),
        ([(1, "b", True), (3, "d", True)], "after the final"),
        ([(0, "x" * 11, False)], "over 10 bytes"),
        ([(0, "é" * 6, False)], "over 10 bytes"),  # 6 characters, 12 bytes
        ([(2, "x" * 6, False), (1, "y" * 6, False)], "over 10 bytes"),  # waiting ones count
        ([(i, "y", False) for i in range(1, 6)], "over the limit"),
        ([(-1, "z", False)], ">= 0"),
    ],
)
def test_contradictory_or_oversized_streams_fail(chunks: list, message: str) -> None:
    a = ReplyAssembler(max_bytes=10, max_pending=4)
    with pytest.raises(StreamError, match=message):
        for c in chunks:
            a.add(*c)


def _chunk(**over: object) -> bytes:
    doc: dict[str, object] = {
        "schema_version": 1,
        "stream_id": "s-1",
        "conversation_id": "c-1",
        "chunk_index": 0,
        "delta": "Sure, ",
        "final": False,
        "timestamp": "2026-12-01T10:00:00Z",
        "context": [{"role": "user", "content": "How do I bake bread?"}],
    }
    doc.update(over)
    return orjson.dumps({k: v for k, v in doc.items() if v is not None})


def test_a_reply_chunk_round_trips() -> None:
    chunk = decode_reply_chunk(_chunk(tenant="t-9"), 1024)
    assert (chunk.stream_id, chunk.chunk_index, chunk.delta, chunk.final) == (
        "s-1",
        0,
        "Sure, ",
        False,
    )
    assert chunk.context is not None and chunk.context[-1].role is Role.USER
    assert decode_reply_chunk(chunk.to_json(), 1024) == chunk
    last = decode_reply_chunk(_chunk(chunk_index=7, delta="", final=True, context=None), 1024)
    assert last.final and last.delta == ""


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"chunk_index": -1}, "chunk_index"),
        ({"delta": ""}, "only the final chunk"),
        ({"delta": "x" * 2000}, "over the limit"),
        ({"final": "yes"}, "'final' must be bool"),
        ({"stream_id": " "}, "must not be empty"),
        ({"context": [{"role": "agent", "content": "hi"}]}, "context"),
        ({"schema_version": 2}, "unsupported schema_version"),
    ],
)
def test_bad_reply_chunks_are_refused_with_the_reason(over: dict, message: str) -> None:
    with pytest.raises(EventError, match=message):
        decode_reply_chunk(_chunk(**over), 1024)
