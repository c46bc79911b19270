"""A streamed agent reply, moderated while it grows: pure logic, no I/O.

An application streams a reply as chunk events (``stream_id``, ``chunk_index``,
``delta``, ``final``; docs/events.md). Three pieces here, each a pure function or a
small state object that the worker drives:

* :class:`ReplyAssembler` puts the chunks of one stream back in order: a repeated
  chunk with the same text is ignored, one with other text is an error (the stream
  fails closed), chunks that arrive early wait for the gap to fill, up to a bound.
* :func:`tokens` and :func:`plan_windows`: the reply is judged in windows of
  ``window`` tokens that overlap by ``overlap`` tokens, each window scored once when
  its last token is complete (or the reply has ended): the cost per token is bounded
  (``window / (window - overlap)`` scorings) and no prefix is scored again. A token
  is a run of non-space characters with the spaces before it, as the service counts
  them (not the model's tokenizer; English text has about 1.3 model tokens a word).
* :func:`releasable`: in hold-back mode, what the user may see. A token is released
  only once every window that holds it has been judged safe, so a harmful sentence
  that straddles two windows is never half shown: after window ``k`` the release
  stops where window ``k + 1`` starts. With a lag of ``n`` windows it stops where
  window ``k + 1 - n`` starts: text is shown only once the ``n`` windows after it
  are judged safe too, so harm that a benign start (a refusal, padding) outweighs in
  its own window is stopped before it is shown when it goes on into the next one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from guard.errors import InvalidInput

_TOKEN = re.compile(r"\s*\S+")


class StreamError(InvalidInput):
    """The chunks of a stream contradict each other or exceed its bounds."""


def tokens(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` character spans of the tokens of ``text``: each a run of
    non-space characters with the spaces before it."""
    return [m.span() for m in _TOKEN.finditer(text)]


@dataclass(frozen=True, slots=True)
class Window:
    index: int
    #: Token positions [first, last) of the reply.
    first: int
    last: int
    #: Character span of the reply text.
    start: int
    end: int


def plan_windows(text: str, final: bool, window: int, overlap: int, judged: int) -> list[Window]:
    """The windows of ``text`` ready to be judged, after the first ``judged`` ones.

    Window ``k`` holds tokens ``[k * step, k * step + window)``, ``step = window -
    overlap``. It is ready when its last token is complete: followed by more text
    (a token still growing at the end of an unfinished reply is not complete), or
    the reply is ``final``. Once final, the windows left cover what remains, the
    last one shorter; a final reply of no tokens has no window.
    """
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"need window >= 1 and 0 <= overlap < window, got {window}, {overlap}")
    spans = tokens(text)
    n = len(spans)
    # A token at the very end of an unfinished reply may still grow ("Hel" + "lo").
    complete = n if final or (spans and spans[-1][1] < len(text)) else max(0, n - 1)
    step = window - overlap
    out = []
    k = judged
    while True:
        first = k * step
        if first >= n or (k > 0 and first + overlap >= n):
            break  # no token that an earlier window did not hold
        last = first + window
        if last > complete:
            if not final:
                break
            last = n
        out.append(Window(k, first, last, spans[first][0], spans[last - 1][1]))
        k += 1
    return out


def releasable(
    text: str, final: bool, window: int, overlap: int, safe_windows: int, lag: int = 0
) -> int:
    """How many characters of ``text`` the user may see once the first
    ``safe_windows`` windows are judged safe (hold-back mode): up to where the next
    window starts, or everything once the reply is final and its last window safe.

    ``lag``: the last ``lag`` safe windows release nothing yet; a window's text waits
    until the ``lag`` windows after it are judged safe too (the final reply's verdict
    releases it all)."""
    spans = tokens(text)
    step = window - overlap
    windows_needed = len(plan_windows(text, True, window, overlap, 0)) if final else None
    if final and windows_needed is not None and safe_windows >= windows_needed:
        return len(text)
    safe_windows -= lag
    if safe_windows <= 0:
        return 0
    next_first = safe_windows * step
    if next_first >= len(spans):
        return spans[-1][1] if spans else 0
    return spans[next_first][0]


@dataclass
class ReplyAssembler:
    """The chunks of one stream, in order. ``max_bytes`` bounds the reply (UTF-8 bytes,
    the chunks waiting for a gap counted too), ``max_pending`` the chunks waiting."""

    max_bytes: int
    max_pending: int = 64
    text: str = ""
    size: int = 0
    next_index: int = 0
    final_index: int | None = None
    pending: dict[int, tuple[str, bool]] = field(default_factory=dict)
    _seen: dict[int, bytes] = field(default_factory=dict)

    def add(self, index: int, delta: str, final: bool) -> bool:
        """Take one chunk; True when it changed what is assembled. Raises
        :class:`StreamError` when the stream contradicts itself or overflows."""
        if index < 0:
            raise StreamError(f"chunk_index must be >= 0, got {index}")
        digest = hashlib.sha256(delta.encode("utf-8", "surrogatepass")).digest() + bytes([final])
        if index in self._seen:
            if self._seen[index] != digest:
                raise StreamError(f"chunk {index} was sent again with other content")
            return False  # a repeat (at-least-once delivery)
        if self.final_index is not None and index > self.final_index:
            raise StreamError(f"chunk {index} comes after the final chunk {self.final_index}")
        if final:
            if self.final_index is not None and self.final_index != index:
                raise StreamError(f"two final chunks: {self.final_index} and {index}")
            if any(i > index for i in self._seen):
                raise StreamError(f"final chunk {index} comes before chunks already received")
            self.final_index = index
        self._seen[index] = digest
        self.pending[index] = (delta, final)
        self.size += len(delta.encode("utf-8", "surrogatepass"))
        if self.size > self.max_bytes:
            raise StreamError(f"the reply is over {self.max_bytes} bytes")
        if len(self.pending) > self.max_pending:
            raise StreamError(
                f"{len(self.pending)} chunks wait for chunk {self.next_index}, over the limit"
            )
        changed = False
        while self.next_index in self.pending:
            piece, _ = self.pending.pop(self.next_index)
            self.text += piece
            self.next_index += 1
            changed = True
        return changed

    def has(self, index: int) -> bool:
        """Whether chunk ``index`` was taken already."""
        return index in self._seen

    @property
    def complete(self) -> bool:
        """Every chunk up to the final one has arrived."""
        return self.final_index is not None and self.next_index > self.final_index
