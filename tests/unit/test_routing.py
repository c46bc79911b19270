import orjson

from guard.conversation import Role, Turn
from guard.events import ChatTurn, Decision, FailClosed, ReviewReason, context_digest
from guard.protocol import Classification, ItemAnswer
from guard.taxonomy import CategoryRef, PolicyRef
from stream_app.routing import (
    MISSING_USER_TURN,
    conversation_for,
    fail_closed_verdict,
    review_reasons,
    verdict_for,
)

BAND = (0.35, 0.65)


def test_review_reasons() -> None:
    assert review_reasons(False, False, 0.1, BAND) == ()
    assert review_reasons(False, False, 0.4, BAND) == (ReviewReason.UNCERTAIN,)
    assert review_reasons(True, False, 0.9, BAND) == (ReviewReason.UNSAFE,)
    assert review_reasons(True, True, 0.5, BAND) == (
        ReviewReason.UNSAFE,
        ReviewReason.PARSE_ERROR,
        ReviewReason.UNCERTAIN,
    )


def _turn(role: Role, context: tuple[Turn, ...] | None = None) -> ChatTurn:
    return ChatTurn("e", "c", 3, role, "now", "2026-11-28T10:00:00Z", context=context)


def test_conversation_for_prefers_event_context_and_caps_it() -> None:
    history = (Turn(Role.USER, "cached"),)
    ctx = tuple(Turn(Role.USER, str(i)) for i in range(5))
    assert conversation_for(_turn(Role.AGENT, ctx), history, 2) == (
        Turn(Role.USER, "3"),
        Turn(Role.USER, "4"),
        Turn(Role.AGENT, "now"),
    )
    assert conversation_for(_turn(Role.AGENT), history, 8) == (
        Turn(Role.USER, "cached"),
        Turn(Role.AGENT, "now"),
    )
    assert conversation_for(_turn(Role.USER), history, 0) == (Turn(Role.USER, "now"),)


def test_agent_turn_without_any_user_turn_gets_a_placeholder() -> None:
    turns = conversation_for(_turn(Role.AGENT), (), 8)
    assert turns[0] == Turn(Role.USER, MISSING_USER_TURN)
    assert turns[-1] == Turn(Role.AGENT, "now")


def test_verdict_carries_the_answer_and_keeps_its_wire_shape() -> None:
    answer = ItemAnswer(
        p_unsafe=0.9123456789,
        unsafe=True,
        categories=(CategoryRef("O3", "Criminal Planning"),),
        parse_error=False,
        policy=PolicyRef("llama-guard-1", "1"),
    )
    turn = ChatTurn("e1", "c1", 0, Role.USER, "x", "2026-11-28T10:00:00Z", tenant="acme")
    v = verdict_for(turn, Classification(answer, "guard", "2", 12.34567), (), BAND)
    assert v.verdict is Decision.UNSAFE and v.review_reasons == (ReviewReason.UNSAFE,)
    wire = orjson.loads(v.to_json())
    assert wire["categories"] == [{"code": "O3", "name": "Criminal Planning"}]
    assert (wire["policy_id"], wire["policy_version"]) == ("llama-guard-1", "1")
    assert (wire["p_unsafe"], wire["latency_ms"]) == (0.912346, 12.346)
    assert (wire["model_name"], wire["model_version"], wire["tenant"]) == ("guard", "2", "acme")
    assert "policy" not in wire


def test_output_keys_are_bounded() -> None:
    from stream_app.routing import MAX_KEY_BYTES, output_key

    assert output_key(None) is None
    assert output_key(b"c-42") == b"c-42"
    long = b"k" * (MAX_KEY_BYTES + 1)
    assert output_key(long) == output_key(long) != output_key(long + b"!")
    assert len(output_key(long) or b"") < 100


def test_long_context_is_trimmed_from_the_oldest_turn_never_the_turn() -> None:
    history = tuple(
        Turn(Role.USER if i % 2 == 0 else Role.AGENT, str(i) * 22_000) for i in range(3)
    )
    turns = conversation_for(_turn(Role.USER), history, 8, max_context_chars=50_000)
    assert [t.content[:1] for t in turns] == ["1", "2", "n"]  # the oldest went, the turn stayed
    assert sum(len(t.content) for t in turns[:-1]) <= 50_000
    alone = conversation_for(_turn(Role.AGENT), history, 8, max_context_chars=100)
    assert alone == (Turn(Role.USER, MISSING_USER_TURN), Turn(Role.AGENT, "now"))


def test_the_verdict_names_its_context_and_its_id_follows_it() -> None:
    answer = ItemAnswer(0.1, False, (), False, PolicyRef("llama-guard-1", "1"))
    turn = ChatTurn("e1", "c1", 1, Role.AGENT, "hello", "2026-11-28T10:00:00Z")
    r = Classification(answer, "guard", "2", 1.0)
    seen = (Turn(Role.USER, "hi"),)
    v = verdict_for(turn, r, seen, BAND)
    assert (v.context_turns, v.context_sha256) == (1, context_digest(seen))
    assert v.verdict_id == verdict_for(turn, r, seen, BAND).verdict_id  # a redelivery
    unknown = (Turn(Role.USER, MISSING_USER_TURN),)
    again = verdict_for(turn, r, unknown, BAND)  # judged after a restart lost the context
    assert again.verdict_id != v.verdict_id and again.context_sha256 != v.context_sha256


def test_a_turn_that_cannot_be_judged_fails_closed_to_review() -> None:
    turn = ChatTurn("e1", "c1", 0, Role.USER, "x", "2026-11-28T10:00:00Z", tenant="acme")
    v = fail_closed_verdict(turn, FailClosed.TOO_LARGE, "guard")
    assert v.verdict is Decision.UNSAFE and v.p_unsafe == 1.0
    assert v.review_reasons == (ReviewReason.FAIL_CLOSED,)
    wire = orjson.loads(v.to_json())
    assert (wire["fail_closed"], wire["tenant"], wire["policy_id"]) == (
        "too_large",
        "acme",
        "llama-guard-1",
    )
    assert v.verdict_id == fail_closed_verdict(turn, FailClosed.TOO_LARGE, "guard").verdict_id
    other = fail_closed_verdict(turn, FailClosed.REJECTED_BY_MODEL, "guard")
    assert other.verdict_id != v.verdict_id


def test_a_fail_closed_turn_names_the_deployments_default_policy() -> None:
    """Reviewers label it with that policy's categories (a Llama Guard 3 deployment's
    S codes, not llama-guard-1's O codes); a turn's own policy still wins."""
    turn = ChatTurn("e1", "c1", 0, Role.USER, "x", "2026-11-28T10:00:00Z")
    v = fail_closed_verdict(turn, FailClosed.TOO_LARGE, "guard", "llama-guard-3")
    assert orjson.loads(v.to_json())["policy_id"] == "llama-guard-3"
    own = ChatTurn("e2", "c1", 1, Role.USER, "x", "2026-11-28T10:00:00Z", policy_id="shop")
    assert fail_closed_verdict(own, FailClosed.TOO_LARGE, "guard", "llama-guard-3").policy.id == (
        "shop"
    )


def test_the_audit_sample_is_keyed_stable_and_about_the_rate() -> None:
    from stream_app.routing import audited

    def turn(event_id: str, content: str = "hello") -> ChatTurn:
        return ChatTurn(event_id, "c1", 0, Role.USER, content, "2026-11-28T10:00:00Z")

    turns = [turn(f"evt-{i}") for i in range(20_000)]
    chosen = [audited(t, 0.05, b"key-a") for t in turns]
    assert chosen == [audited(t, 0.05, b"key-a") for t in turns]  # a redelivery alike
    assert 0.04 < sum(chosen) / len(turns) < 0.06
    other = [audited(t, 0.05, b"key-b") for t in turns]
    assert sum(a and b for a, b in zip(chosen, other, strict=True)) < 0.2 * sum(chosen)
    assert not any(audited(t, 0.0, b"key-a") for t in turns[:1000])
    assert all(audited(t, 1.0, b"key-a") for t in turns[:1000])
    # One event id reused for many turns does not give them one draw.
    same_id = [audited(turn("evt-x", f"text {i}"), 0.05, b"key-a") for i in range(4000)]
    assert 0.03 < sum(same_id) / len(same_id) < 0.07


def test_an_audited_turn_goes_to_review_only_when_nothing_else_sends_it() -> None:
    from guard.events import ReviewReason

    assert review_reasons(False, False, 0.01, BAND, audit=True) == (ReviewReason.AUDIT,)
    assert review_reasons(False, False, 0.01, BAND, audit=False) == ()
    assert review_reasons(True, False, 0.99, BAND, audit=True) == (ReviewReason.UNSAFE,)
    assert review_reasons(False, False, 0.5, BAND, audit=True) == (ReviewReason.UNCERTAIN,)
