"""The moderator's rules with a stand-in Triton client (pure logic; the stand-in answers
as a served Llama Guard 3 would): the policy a fail-closed verdict names, the audit sample."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from guard.conversation import Role
from guard.events import ChatTurn, now_rfc3339
from guard.protocol import Classification, ClassifyRequest, ItemAnswer
from guard.settings import Settings
from guard.taxonomy import PolicyRef
from stream_app.metrics import WorkerMetrics
from stream_app.moderation import Moderator, RawMessage
from stream_app.triton_client import TooSlow


class ServedLlamaGuard3:
    """Answers like a served model whose own default policy is llama-guard-3; turns that
    say "slow" run past the deadline."""

    def __init__(self, reachable: bool = True) -> None:
        self.reachable = reachable

    async def classify(
        self, req: ClassifyRequest, *, retry_forever: bool = False
    ) -> Classification:
        if not self.reachable or "slow" in req.turns[-1].content:
            raise TooSlow("past the deadline 3 times")
        policy = PolicyRef(req.policy_id or "llama-guard-3", "1")
        return Classification(ItemAnswer(0.01, False, (), False, policy), "guard", "1", 5.0)


def _moderate(
    settings: Settings, client: ServedLlamaGuard3, text: str, learn: bool = True
) -> dict[str, list[dict[str, object]]]:
    """What the moderator sends for one user turn ``text``, by topic."""
    sent: dict[str, list[dict[str, object]]] = {}

    async def send(topic: str, key: bytes | None, value: bytes) -> asyncio.Future[None]:
        sent.setdefault(topic, []).append(orjson.loads(value))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def run() -> None:
        moderator = Moderator(settings, client, send, WorkerMetrics())  # type: ignore[arg-type]
        if learn:
            await moderator.learn_default_policy()
        turn = ChatTurn("e1", "c1", 0, Role.USER, text, now_rfc3339())
        msg = RawMessage(b"c1", orjson.dumps(turn.to_dict()), "chat-turns.v1", 0, 0)
        await moderator.run(moderator.plan([msg]))

    asyncio.run(run())
    return sent


def _fail_closed_policy(settings: Settings, client: ServedLlamaGuard3, learn: bool) -> str:
    (verdict,) = _moderate(settings, client, "a slow turn", learn)[settings.topics.verdicts]
    assert verdict["fail_closed"] == "too_slow"
    return str(verdict["policy_id"])


@pytest.mark.parametrize(
    ("deployment_default", "reachable", "expected"),
    [
        (None, True, "llama-guard-3"),  # learnt from the served model at start
        ("shop", True, "shop"),  # the deployment's setting wins
        (None, False, "llama-guard-1"),  # nothing known: the documented fallback
    ],
)
def test_a_fail_closed_verdict_names_the_served_models_default_policy(
    deployment_default: str | None, reachable: bool, expected: str
) -> None:
    settings = Settings()  # type: ignore[call-arg]
    settings = settings.model_copy(
        update={
            "policy": settings.policy.model_copy(update={"default_policy_id": deployment_default})
        }
    )
    assert _fail_closed_policy(settings, ServedLlamaGuard3(reachable), learn=True) == expected


def _with_policy(**values: object) -> Settings:
    s = Settings()  # type: ignore[call-arg]
    return s.model_copy(update={"policy": s.policy.model_copy(update=values)})


def test_a_confident_safe_verdict_in_the_audit_sample_goes_to_review() -> None:
    s = _with_policy(audit_rate=1.0)
    sent = _moderate(s, ServedLlamaGuard3(), "how do I bake bread?")
    (verdict,) = sent[s.topics.verdicts]
    assert verdict["verdict"] == "safe" and verdict["review_reasons"] == ["audit"]
    (flagged,) = sent[s.topics.flagged]
    assert flagged["reasons"] == ["audit"]
    none = _moderate(_with_policy(audit_rate=0.0), ServedLlamaGuard3(), "how do I bake bread?")
    assert s.topics.flagged not in none
