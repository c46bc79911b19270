from guard.conversation import Role, Turn
from stream_app.context_cache import TURN_OVERHEAD_BYTES, ContextCache, turn_cost

U = Turn(Role.USER, "u")
A = Turn(Role.AGENT, "a")


def test_history_is_what_came_before_the_turn() -> None:
    c = ContextCache(max_turns=8, max_conversations=10)
    c.add((None, "c"), 0, U)
    c.add((None, "c"), 1, A)
    assert c.history((None, "c"), 2) == (U, A)
    assert c.history((None, "c"), 1) == (U,)
    assert c.history((None, "other"), 5) == ()


def test_replays_are_not_stored_twice_and_turns_are_capped() -> None:
    c = ContextCache(max_turns=2, max_conversations=10)
    for i in range(3):
        c.add((None, "c"), i, Turn(Role.USER, str(i)))
    c.add((None, "c"), 1, Turn(Role.USER, "replayed"))
    assert c.history((None, "c"), 10) == (Turn(Role.USER, "1"), Turn(Role.USER, "2"))


def test_least_recently_used_conversation_is_evicted() -> None:
    c = ContextCache(max_turns=2, max_conversations=2)
    c.add((None, "a"), 0, U)
    c.add((None, "b"), 0, U)
    c.history((None, "a"), 1)  # touch a
    c.add((None, "c"), 0, U)
    assert len(c) == 2 and c.history((None, "b"), 1) == () and c.history((None, "a"), 1) == (U,)


def test_memory_budget_evicts_oldest_conversations_by_bytes() -> None:
    text = "x" * 800  # 1,000 counted bytes with the per-turn overhead
    c = ContextCache(max_turns=4, max_conversations=1_000, max_bytes=3_000)
    for conv in ("a", "b", "c"):
        c.add((None, conv), 0, Turn(Role.USER, text))
    assert len(c) == 3 and c.bytes == 3 * (800 + TURN_OVERHEAD_BYTES)
    c.add((None, "d"), 0, Turn(Role.USER, text))  # over budget: "a" (least recent) goes
    assert c.history((None, "a"), 1) == () and c.history((None, "d"), 1) == (Turn(Role.USER, text),)
    assert c.bytes <= 3_000
    # a conversation's own turn cap also frees bytes
    for i in range(1, 10):
        c.add((None, "d"), i, Turn(Role.USER, "y"))
    assert c.bytes <= 3_000
    assert c.bytes == sum(
        turn_cost(t) for conv in ("b", "c", "d") for t in c.history((None, conv), 100)
    )


def test_one_oversized_conversation_is_still_kept() -> None:
    # the turn being checked next needs its context even if it alone exceeds the budget
    c = ContextCache(max_turns=2, max_conversations=10, max_bytes=100)
    big = Turn(Role.USER, "z" * 500)
    c.add((None, "a"), 0, big)
    assert c.history((None, "a"), 1) == (big,)


def test_tenants_never_share_context_on_the_same_conversation_id() -> None:
    c = ContextCache(max_turns=8, max_conversations=10)
    c.add(("acme", "c"), 0, Turn(Role.USER, "acme's secret"))
    assert c.history(("globex", "c"), 5) == ()
    assert c.history((None, "c"), 5) == ()
    assert c.history(("acme", "c"), 5) == (Turn(Role.USER, "acme's secret"),)


def test_a_huge_turn_index_cannot_hide_the_real_turns() -> None:
    c = ContextCache(max_turns=8, max_conversations=10)
    c.add((None, "c"), 2**62, Turn(Role.USER, "poison"))
    c.add((None, "c"), 0, U)
    c.add((None, "c"), 1, A)
    assert c.history((None, "c"), 2) == (U, A)
    c.add((None, "c"), 1, Turn(Role.AGENT, "replayed"))  # the same index again: not stored
    assert c.history((None, "c"), 2) == (U, A)
