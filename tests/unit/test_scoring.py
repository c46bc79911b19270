"""The scorer in-process, against a plain transformers forward pass."""

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from guard.causal_lm import CausalLMGuard
from guard.conversation import ConversationError, Role, Turn
from guard.prompt import PromptFormat
from guard.scoring import NO_VERDICT, GuardRequest, ScorerConfig, length_batches
from guard.taxonomy import LLAMA_GUARD_1

TEXTS = [
    "hi",
    "how do I bake sourdough bread at home with a cast iron pot? " * 3,
    "tell me a joke",
    "x " * 200,
    "What is the capital of France?",
]


def _reqs() -> list[GuardRequest]:
    return [GuardRequest((Turn(Role.USER, t),), Role.USER, LLAMA_GUARD_1) for t in TEXTS]


def reference_p_unsafe(checkpoint: Path, guard: CausalLMGuard, req: GuardRequest) -> float:
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    ids = torch.tensor([guard.encode(req)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, -1]
    pair = torch.stack([logits[guard.safe_id], logits[guard.unsafe_id]])
    return float(torch.softmax(pair, 0)[1])


def test_batched_mixed_lengths_equal_one_at_a_time_and_plain_forward(tiny_lg1: Path) -> None:
    guard = CausalLMGuard.load(tiny_lg1, ScorerConfig(max_batch=3, max_batch_tokens=4000))
    batched = guard.score(_reqs())
    singles = [guard.score([r])[0] for r in _reqs()]
    for b, s, r in zip(batched, singles, _reqs(), strict=True):
        assert b.p_unsafe == pytest.approx(s.p_unsafe, abs=1e-5)
        assert b.unsafe == s.unsafe
        assert b.p_unsafe == pytest.approx(reference_p_unsafe(tiny_lg1, guard, r), abs=1e-5)
        assert b.parse_error is None  # the answer-only head always starts with safe/unsafe


def test_token_ids_come_from_the_tokenizer(tiny_lg1: Path) -> None:
    lg3 = CausalLMGuard.load(tiny_lg1, ScorerConfig(prompt_format=PromptFormat.LG3))
    assert (lg3.safe_id, lg3.unsafe_id) == (19193, 39257)  # Llama 3: "safe", "unsafe"
    lg1 = CausalLMGuard.load(tiny_lg1)
    assert lg1.tok.decode([lg1.safe_id]) == " safe"
    assert lg1.tok.decode([lg1.unsafe_id]) == " unsafe"


def test_garbage_first_token_is_unsafe_with_parse_error(tiny_random: Path) -> None:
    guard = CausalLMGuard.load(tiny_random)
    for result in guard.score(_reqs()):
        assert result.unsafe
        assert result.parse_error == NO_VERDICT


def test_unsafe_verdict_with_unparseable_categories_stays_unsafe(tiny_lg1: Path) -> None:
    # threshold 0: every turn is unsafe; the tiny model cannot write a code line.
    guard = CausalLMGuard.load(tiny_lg1, ScorerConfig(threshold=0.0))
    result = guard.score(_reqs()[:1])[0]
    assert result.unsafe and result.codes == ()
    assert result.parse_error is not None


def test_oldest_context_is_dropped_to_fit_and_too_long_is_an_error(tiny_lg1: Path) -> None:
    turns = (
        Turn(Role.USER, "old " * 50),
        Turn(Role.AGENT, "reply " * 50),
        Turn(Role.USER, "new question"),
        Turn(Role.AGENT, "short answer"),
    )
    full = CausalLMGuard.load(tiny_lg1)
    whole = len(full.encode(GuardRequest(turns, Role.AGENT, LLAMA_GUARD_1)))
    recent = len(full.encode(GuardRequest(turns[2:], Role.AGENT, LLAMA_GUARD_1)))
    assert recent + 50 < whole
    limit = recent + 10
    guard = CausalLMGuard.load(tiny_lg1, ScorerConfig(max_prompt_tokens=limit))
    ids = guard.encode(GuardRequest(turns, Role.AGENT, LLAMA_GUARD_1))
    text = guard.tok.decode(ids)
    assert "new question" in text and "short answer" in text and "old old" not in text
    assert len(ids) == recent
    with pytest.raises(ConversationError, match=f"does not fit in {limit} prompt tokens"):
        guard.encode(GuardRequest((Turn(Role.USER, "word " * 400),), Role.USER, LLAMA_GUARD_1))


def test_a_response_check_keeps_the_end_of_a_user_turn_too_long_to_fit(tiny_lg1: Path) -> None:
    question = "filler " * 600 + "so how do I pick the lock?"
    turns = (Turn(Role.USER, question), Turn(Role.AGENT, "short answer"))
    guard = CausalLMGuard.load(
        tiny_lg1, ScorerConfig(max_prompt_tokens=400, with_descriptions=False)
    )
    text = guard.tok.decode(guard.encode(GuardRequest(turns, Role.AGENT, LLAMA_GUARD_1)))
    assert "short answer" in text and "so how do I pick the lock?" in text
    assert text.count("filler") < 600
    assert "Agent: short answer" in text and "User: " in text


def test_length_batches_respect_both_budgets() -> None:
    lengths = [5, 50, 10, 20, 5, 5, 5, 5, 30]
    batches = length_batches(lengths, max_batch=4, max_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 4
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 100
    assert length_batches([500], max_batch=4, max_tokens=100) == [[0]]  # too long: alone


def test_policy_prefix_cache_gives_the_same_scores(tiny_lg1: Path) -> None:
    reqs = _reqs() + [
        GuardRequest((Turn(Role.USER, "hi"), Turn(Role.AGENT, t)), Role.AGENT, LLAMA_GUARD_1)
        for t in TEXTS
    ]
    plain = CausalLMGuard.load(tiny_lg1, ScorerConfig(prefix_cache=False, max_batch=3))
    cached = CausalLMGuard.load(tiny_lg1, ScorerConfig(prefix_cache=True, max_batch=3))
    prepared = [cached.prepare(r) for r in reqs]
    assert all(p.prefix_len > 50 for p in prepared), "the policy prefix is shared"
    assert len({p.prefix_key for p in prepared}) == 2  # one per side
    for a, b in zip(plain.score(reqs), cached.score(reqs), strict=True):
        assert b.p_unsafe == pytest.approx(a.p_unsafe, abs=1e-5)
        assert (a.unsafe, a.parse_error) == (b.unsafe, b.parse_error)


@pytest.fixture(scope="module")
def tiny_lively(llama3_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama with large weights: unlike the usual tiny models, whose hidden
    state barely depends on the turn, its greedy answers differ from turn to turn."""
    from guard.checkpoints import build_tiny_llama

    out = tmp_path_factory.mktemp("tiny-lively")
    return build_tiny_llama(out, llama3_tokenizer_dir, seed=2, initializer_range=0.5)


@pytest.mark.parametrize("prefix_cache", [True, False])
def test_batched_category_decoding_equals_one_generate_per_turn(
    tiny_lively: Path, prefix_cache: bool
) -> None:
    """Category lines are decoded for a whole batch at once, from the scoring pass's KV
    cache (with the policy prefix's, or not); each must be what transformers' greedy
    generate writes for that turn alone."""
    cfg = ScorerConfig(max_batch=3, prompt_format=PromptFormat.LG1, prefix_cache=prefix_cache)
    guard = CausalLMGuard.load(tiny_lively, cfg)
    got = guard.unsafe_answers(_reqs())
    model = AutoModelForCausalLM.from_pretrained(str(tiny_lively), dtype=torch.float32).eval()
    expected = []
    for req in _reqs():
        prompt = torch.tensor([[*guard.encode(req), guard.unsafe_id]])
        out = model.generate(
            input_ids=prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=cfg.max_answer_tokens,
            do_sample=False,
            pad_token_id=guard.pad_id,
        )
        expected.append(guard.tok.decode(out[0, prompt.shape[1] - 1 :], skip_special_tokens=True))
    assert got == expected
    assert len(set(got)) > 2  # the turns really decode differently
