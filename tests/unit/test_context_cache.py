from guard.conversation import Role, Turn
from stream_app.context_cache import ContextCache

U = Turn(Role.USER, "u")
A = Turn(Role.AGENT, "a")


def test_history_is_what_came_before_the_turn() -> None:
    c = ContextCache(max_turns=8, max_conversations=10)
    c.add("c", 0, U)
    c.add("c", 1, A)
    assert c.history("c", 2) == (U, A)
    assert c.history("c", 1) == (U,)
    assert c.history("other", 5) == ()


def test_replays_are_not_stored_twice_and_turns_are_capped() -> None:
    c = ContextCache(max_turns=2, max_conversations=10)
    for i in range(3):
        c.add("c", i, Turn(Role.USER, str(i)))
    c.add("c", 1, Turn(Role.USER, "replayed"))
    assert c.history("c", 10) == (Turn(Role.USER, "1"), Turn(Role.USER, "2"))


def test_least_recently_used_conversation_is_evicted() -> None:
    c = ContextCache(max_turns=2, max_conversations=2)
    c.add("a", 0, U)
    c.add("b", 0, U)
    c.history("a", 1)  # touch a
    c.add("c", 0, U)
    assert len(c) == 2 and c.history("b", 1) == () and c.history("a", 1) == (U,)
