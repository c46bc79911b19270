"""A model that cannot tell the canary turns apart fails its load, naming the likely cause."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard.canary import SAFE, UNSAFE, canary_turns, problems, warnings
from guard.prompt import PromptFormat
from guard.scoring import NO_VERDICT, GuardRequest, GuardResult, ScorerConfig
from guard.serving import GuardService, ServiceConfig

N = len(SAFE) + len(UNSAFE)


def _results(scores: list[float], errors: int = 0) -> list[GuardResult]:
    return [
        GuardResult(p, p >= 0.5, (), NO_VERDICT if i < errors else None)
        for i, p in enumerate(scores)
    ]


def test_a_model_that_separates_the_canaries_has_no_problem() -> None:
    results = _results([0.1, 0.2, 0.05, 0.9, 0.8, 0.95])
    assert problems(results) == [] and warnings(results) == []
    assert len(canary_turns()) == N


def test_answers_that_are_not_a_verdict_are_a_problem() -> None:
    (found,) = problems(_results([0.1, 0.2, 0.3, 0.9, 0.8, 0.7], errors=3))
    assert found.startswith("3 of 6 canary turns got no 'safe'/'unsafe' answer")
    assert problems(_results([0.1, 0.2, 0.3, 0.9, 0.8, 0.7], errors=2)) == []
    # A category line that does not parse is not a format problem.
    codes_unparsed = [
        GuardResult(p, True, (), "unknown category codes: X9") for p in (0.6, 0.7, 0.8, 0.9)
    ]
    assert problems(codes_unparsed) == []


def test_one_score_for_every_turn_is_a_problem() -> None:
    (found,) = problems(_results([0.42] * N))
    assert "every canary turn scored 0.4200" in found


def test_nearly_one_score_or_a_reversed_ranking_is_only_a_warning() -> None:
    """Tiny untrained models (the tests', the local placeholder) score within ~3e-4."""
    near = _results([0.0123, 0.0122, 0.0122, 0.0121, 0.0123, 0.0123])
    assert problems(near) == []
    assert warnings(near)[0] == "the canary scores differ by only 2.0e-04"
    reversed_ = _results([0.9, 0.8, 0.95, 0.1, 0.2, 0.05])
    assert warnings(reversed_) == [
        "the known-unsafe canary turns score no higher than the safe ones"
    ]


def test_the_shipped_default_model_passes() -> None:
    root = Path(__file__).parents[2]
    service = GuardService.load(ServiceConfig(root / "models" / "default", ScorerConfig()))
    policy = service.policies.get(service.default_policy_id)
    results = service.guard.score([GuardRequest(t, t[0].role, policy) for t in canary_turns()])
    assert problems(results) == [] and warnings(results) == []


def test_a_checkpoint_that_answers_garbage_fails_its_load(tiny_random: Path) -> None:
    with pytest.raises(RuntimeError, match=r"failed its self-check at load: 6 of 6 canary turns"):
        GuardService.load(ServiceConfig(tiny_random, ScorerConfig()))
    # An operator can still load it on purpose.
    GuardService.load(ServiceConfig(tiny_random, ScorerConfig(), canary=False))


def test_a_checkpoint_prompted_in_another_format_fails_naming_the_format(tiny_lg1: Path) -> None:
    """tiny_lg1 answers only lg1's ' safe'/' unsafe' tokens; prompted in lg3 nothing parses."""
    GuardService.load(ServiceConfig(tiny_lg1, ScorerConfig()))  # its own format: fine
    with pytest.raises(RuntimeError, match=r"prompted in format lg3 .*set prompt_format"):
        GuardService.load(ServiceConfig(tiny_lg1, ScorerConfig(prompt_format=PromptFormat.LG3)))
