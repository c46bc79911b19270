import pytest

from guard.conversation import (
    ConversationError,
    Role,
    Turn,
    check_conversation,
    turns_from_json,
    turns_to_json,
)


def test_round_trip() -> None:
    turns = [Turn(Role.USER, "hi ✓"), Turn(Role.AGENT, "hello")]
    assert turns_from_json(turns_to_json(turns)) == tuple(turns)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"{}", "must be a list of turns"),
        (b'[{"role": "system", "content": "x"}]', r"conversation\[0\]\.role must be"),
        (b'[{"role": "user", "content": 3}]', r"conversation\[0\] must be"),
        (b'["hi"]', r"conversation\[0\] must be"),
    ],
)
def test_bad_json(raw: bytes, message: str) -> None:
    with pytest.raises(ConversationError, match=message):
        turns_from_json(raw)


def test_checks() -> None:
    u, a = Turn(Role.USER, "hi"), Turn(Role.AGENT, "yo")
    assert check_conversation([u], Role.USER) == (u,)
    assert check_conversation([u, a], Role.AGENT) == (u, a)
    with pytest.raises(ConversationError, match="empty conversation"):
        check_conversation([], Role.USER)
    with pytest.raises(ConversationError, match="needs a user turn"):
        check_conversation([a], Role.AGENT)
    with pytest.raises(ConversationError, match="last turn by user"):
        check_conversation([u, a], Role.USER)
    with pytest.raises(ConversationError, match="is empty"):
        check_conversation([Turn(Role.USER, "  ")], Role.USER)
    with pytest.raises(ConversationError, match="more than the limit of 3"):
        check_conversation([Turn(Role.USER, "abcd")], Role.USER, max_chars=3)
