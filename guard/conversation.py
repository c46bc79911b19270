"""Conversations as the guard model sees them, and their one set of validators.

Every place that reads turns from outside -- chat-turn events and their
``context``, the Triton model's ``CONVERSATION`` input, dataset rows -- goes
through :func:`parse_role` and :func:`parse_turns`; what a conversation must
look like to be classified is :func:`check_conversation`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from guard.errors import InvalidInput


class Role(StrEnum):
    USER = "user"
    AGENT = "agent"


class ConversationError(InvalidInput):
    """A conversation cannot be classified as asked (the reason is the message)."""


@dataclass(frozen=True, slots=True)
class Turn:
    role: Role
    content: str


def parse_role(value: object, what: str = "role") -> Role:
    """``value`` as a :class:`Role`; ``what`` names it in the error."""
    if value not in (Role.USER.value, Role.AGENT.value):
        shown = value[:20] if isinstance(value, str) else value
        raise ConversationError(f"{what} must be 'user' or 'agent', got {shown!r}")
    return Role(str(value))


def parse_turns(rows: object, what: str = "conversation") -> tuple[Turn, ...]:
    """``[{"role": "user"|"agent", "content": str}, ...]`` as turns (may be empty)."""
    if not isinstance(rows, list):
        raise ConversationError(f"{what} must be a list of turns")
    turns = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping) or not isinstance(row.get("content"), str):
            raise ConversationError(
                f"{what}[{i}] must be {{'role': 'user'|'agent', 'content': str}}"
            )
        turns.append(Turn(parse_role(row.get("role"), f"{what}[{i}].role"), row["content"]))
    return tuple(turns)


def check_conversation(
    turns: Sequence[Turn], side: Role, max_chars: int | None = None
) -> tuple[Turn, ...]:
    """Validate ``turns`` for a check of ``side`` and return them as a tuple.

    The last turn is the one being classified and must have the role ``side``;
    a response (agent) check needs a user turn before it.
    """
    if not turns:
        raise ConversationError("empty conversation")
    if turns[-1].role is not side:
        raise ConversationError(
            f"a {side.value} check needs a last turn by {side.value}, got {turns[-1].role.value}"
        )
    if side is Role.AGENT and not any(t.role is Role.USER for t in turns[:-1]):
        raise ConversationError("a response check needs a user turn before the agent turn")
    if not turns[-1].content.strip():
        raise ConversationError("the turn to classify is empty")
    if max_chars is not None:
        total = sum(len(t.content) for t in turns)
        if total > max_chars:
            raise ConversationError(
                f"conversation has {total} characters, more than the limit of {max_chars}"
            )
    return tuple(turns)


def turns_from_json(raw: bytes | str) -> tuple[Turn, ...]:
    """Parse the JSON form written by :func:`turns_to_json`."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConversationError(f"conversation is not valid JSON: {exc}") from None
    return parse_turns(data)


def turns_to_rows(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """``[{"role", "content"}, ...]``: how every event and file writes turns."""
    return [{"role": t.role.value, "content": t.content} for t in turns]


def turns_to_json(turns: Sequence[Turn]) -> bytes:
    return orjson.dumps(turns_to_rows(turns))
