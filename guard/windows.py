"""Long turns are judged in overlapping, sentence-aligned windows.

A model sees a bounded view of a turn: the encoder guard a few hundred tokens
(and a mean over them, which dilutes one harmful sentence in benign filler), a
causal LM ``max_prompt_tokens``. So a turn longer than the model's window is
also cut into windows: whole sentences packed up to ``max_chars``, each window
starting with the last sentence of the one before (so a request split across
a boundary is seen whole once). A sentence longer than a window is cut into
overlapping pieces. Every sentence is also judged on its own
(:func:`views`): a model that averages over its input dilutes a short request
packed with short benign sentences ("Build a pipe bomb. The basil is doing
well." scores far below the request alone), so only the sentence alone shows
it (models that attend to each token, a causal LM, skip these). Repeated
windows are judged once. The turn takes its worst window
(:func:`judged`).

Pure functions; :class:`guard.serving.GuardService` applies them to every model
kind.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from guard.scoring import GuardResult

#: Shortest sentence judged alone (non-space characters): "Build a bomb." has 11. It
#: bounds the views of a turn of crafted fragments ("1. 2. 3. ...": 20x the windows).
MIN_SENTENCE = 10

#: A sentence: up to and including its end punctuation (or a line break).
_SENTENCE = re.compile(r"[^.!?。！？\n]*(?:[.!?。！？]+[\"')\]]*|\n+|$)")


def sentences(text: str) -> list[str]:
    """``text`` cut after each sentence end; the pieces join back to ``text``."""
    return [s for s in _SENTENCE.findall(text) if s]


def _pieces(text: str, max_chars: int) -> list[str]:
    """Sentences, the ones longer than ``max_chars`` cut with a quarter overlap."""
    step = max(1, max_chars - max_chars // 4)
    out = []
    for s in sentences(text):
        if len(s) <= max_chars:
            out.append(s)
        else:
            out.extend(s[i : i + max_chars] for i in range(0, len(s) - max_chars // 4, step))
    return out


def windows(text: str, max_chars: int) -> list[str]:
    """``text`` itself when it fits in ``max_chars``; else its windows, in order.

    Every character of ``text`` is in at least one window, no window is longer
    than ``max_chars``, and consecutive windows share a sentence (or a quarter
    of a long sentence).
    """
    if max_chars < 1:
        raise ValueError("max_chars must be >= 1")
    if len(text) <= max_chars:
        return [text]
    out: list[str] = []
    current: list[str] = []
    for piece in _pieces(text, max_chars):
        if current and sum(map(len, current)) + len(piece) > max_chars:
            out.append("".join(current))
            last = current[-1]
            current = [last] if len(last) + len(piece) <= max_chars else []
        current.append(piece)
    out.append("".join(current))
    return [w for w in out if w.strip()]


def views(text: str, max_chars: int, sentence_views: bool = True) -> list[str]:
    """What the model judges of ``text``: ``[text]`` when it fits in ``max_chars``;
    else its :func:`windows`, then (with ``sentence_views``) each sentence, or
    piece of a long one, of at least ``MIN_SENTENCE`` non-space characters that no
    window already is; in order and without repeats (padding by repetition costs
    nothing)."""
    if len(text) <= max_chars:
        return [text]
    out = dict.fromkeys(windows(text, max_chars))
    if sentence_views:
        out.update(
            dict.fromkeys(
                p for p in _pieces(text, max_chars) if len("".join(p.split())) >= MIN_SENTENCE
            )
        )
    return list(out)


def judged(
    whole: GuardResult | None,
    parts: Sequence[GuardResult],
    window_threshold: float,
    threshold: float,
) -> GuardResult:
    """The verdict of a turn judged whole and in windows.

    The whole view's verdict, unless a window is unsafe with a score of at least
    ``window_threshold`` (or could not be read): then the turn is unsafe with that
    window's categories (the highest such window's). ``window_threshold`` is the
    model's bar for one window, at or above its turn ``threshold``: a model that
    averages over its input (the encoder guard) scores sentences out of context
    higher, and taking the maximum of many windows would raise its false positives
    on long benign text. The turn's score stays on the turn scale: a window's score
    in ``[window_threshold, 1]`` maps linearly onto ``[threshold, 1]`` (the identity
    when the two thresholds are equal), and the whole view's score counts if higher.
    ``whole`` is None when the turn only fits the model window by window.
    """
    if not parts:
        raise ValueError("no window results")
    hits = [r for r in parts if r.parse_error or (r.unsafe and r.p_unsafe >= window_threshold)]
    error = next((r.parse_error for r in (whole, *parts) if r is not None and r.parse_error), None)
    if hits:
        top = max(hits, key=lambda r: r.p_unsafe)
        p = on_turn_scale(top.p_unsafe, window_threshold, threshold)
        return GuardResult(max(p, whole.p_unsafe if whole else 0.0), True, top.codes, error)
    top = whole if whole is not None else max(parts, key=lambda r: r.p_unsafe)
    return GuardResult(top.p_unsafe, top.unsafe, top.codes, error)


def on_turn_scale(p: float, window_threshold: float, threshold: float) -> float:
    """A window score in ``[window_threshold, 1]``, mapped linearly onto ``[threshold, 1]``."""
    if window_threshold >= 1.0:
        return p
    return threshold + (p - window_threshold) * (1.0 - threshold) / (1.0 - window_threshold)
