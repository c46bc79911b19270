"""Conversations as the guard model sees them, and their validation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import orjson


class Role(StrEnum):
    USER = "user"
    AGENT = "agent"


class ConversationError(ValueError):
    """A conversation cannot be classified as asked (the reason is the message)."""


@dataclass(frozen=True, slots=True)
class Turn:
    role: Role
    content: str


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


def turns_from_json(raw: bytes | str) -> list[Turn]:
    """Parse ``[{"role": "user"|"agent", "content": "..."}, ...]``."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConversationError(f"conversation is not valid JSON: {exc}") from None
    if not isinstance(data, list):
        raise ConversationError("conversation must be a JSON list of turns")
    turns = []
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise ConversationError(f"turn {i} must be an object")
        role, content = row.get("role"), row.get("content")
        if role not in (Role.USER.value, Role.AGENT.value):
            raise ConversationError(f"turn {i}: role must be 'user' or 'agent', got {role!r}")
        if not isinstance(content, str):
            raise ConversationError(f"turn {i}: content must be a string")
        turns.append(Turn(Role(role), content))
    return turns


def turns_to_json(turns: Sequence[Turn]) -> bytes:
    return orjson.dumps([{"role": t.role.value, "content": t.content} for t in turns])
