"""Parsing the guard model's answer, strictly and failing closed."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass


class AnswerParseError(ValueError):
    """The model's answer does not follow the output format (never read as safe)."""


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    unsafe: bool
    codes: tuple[str, ...]


def parse_answer(text: str, known_codes: Collection[str]) -> ParsedAnswer:
    """Parse ``safe`` or ``unsafe`` + a line of comma-separated codes.

    Whitespace around lines and codes is tolerated, as are trailing blank lines
    and an end-of-turn token the decoder left in. Anything else -- other words,
    a missing or empty code line, unknown or repeated codes, extra lines -- is
    an :class:`AnswerParseError`.
    """
    lines = [ln.strip() for ln in text.strip().splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines:
        raise AnswerParseError("empty answer")
    head = lines[0]
    if head == "safe":
        if len(lines) > 1:
            raise AnswerParseError("'safe' followed by more lines")
        return ParsedAnswer(False, ())
    if head != "unsafe":
        raise AnswerParseError(f"first line is neither 'safe' nor 'unsafe': {head[:40]!r}")
    if len(lines) != 2:
        raise AnswerParseError("'unsafe' must be followed by exactly one line of codes")
    codes = tuple(c.strip() for c in lines[1].split(","))
    if any(not c for c in codes):
        raise AnswerParseError("empty category code")
    unknown = [c for c in codes if c not in known_codes]
    if unknown:
        raise AnswerParseError(f"unknown category codes: {', '.join(unknown)[:80]}")
    if len(set(codes)) != len(codes):
        raise AnswerParseError("repeated category code")
    return ParsedAnswer(True, codes)
