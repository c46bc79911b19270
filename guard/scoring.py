"""The guard model contract shared by every model kind: requests, results, config.

A guard turns a :class:`GuardRequest` (a validated conversation, the side to
check, the policy) into a :class:`GuardResult`. Each kind -- the causal LM of
the Llama Guard method (:mod:`guard.causal_lm`), the small encoder guard
(:mod:`guard.encoder`) -- implements :class:`Guard`; :mod:`guard.loaders`
picks one for a checkpoint. The Triton model, evaluation and the benchmarks
only see this contract, so all of them score identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from guard.conversation import Role, Turn
from guard.prompt import PromptFormat
from guard.taxonomy import Policy

#: p_unsafe at or above which a turn is unsafe, for a model that names no
#: threshold of its own (an encoder guard's manifest does).
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True, slots=True)
class GuardRequest:
    """One turn to classify: the conversation up to it, the side, the policy."""

    turns: tuple[Turn, ...]
    side: Role
    policy: Policy


@dataclass(frozen=True, slots=True)
class GuardResult:
    p_unsafe: float
    unsafe: bool
    codes: tuple[str, ...]
    parse_error: str | None = None


#: A guard's own model input for one request (token ids and whatever it needs).
P = TypeVar("P")


class Guard(Protocol[P]):
    """What the Triton model, evaluation and benchmarks need from a guard model."""

    name: str
    #: Score at or above which a turn is unsafe.
    threshold: float
    #: Longest turn (characters) this model judges well in one view; longer turns
    #: are also judged in windows of this size (:mod:`guard.windows`).
    window_chars: int
    #: Score at or above which one window makes the turn unsafe (at least the
    #: model's threshold; see :func:`guard.windows.judged`).
    window_threshold: float
    #: Whether each sentence of a long turn is also judged on its own: a model
    #: that averages over its input dilutes a short request packed between short
    #: benign sentences (:func:`guard.windows.views`).
    sentence_views: bool
    #: The policy of a turn that names none, unless the operator sets one: the
    #: taxonomy this model was trained with.
    default_policy_id: str

    def prepare(self, req: GuardRequest) -> P:
        """Model input for ``req``; :class:`ConversationError` when it cannot fit."""
        ...

    def score_prepared(self, items: Sequence[P]) -> list[GuardResult]: ...

    def score(self, requests: Sequence[GuardRequest]) -> list[GuardResult]: ...


#: The parse error of a turn whose first answer token is neither verdict word: the
#: model is not answering in the prompt's format at all.
NO_VERDICT = "first answer token is neither 'safe' nor 'unsafe'"


@dataclass(frozen=True, slots=True)
class ScorerConfig:
    #: None: the checkpoint's own (:func:`guard.families.detect`), else ``lg1``.
    prompt_format: PromptFormat | None = None
    #: None: the model's own threshold (its manifest's, else DEFAULT_THRESHOLD).
    threshold: float | None = None
    max_prompt_tokens: int = 4096
    max_batch: int = 64
    #: Budget of padded tokens per forward pass (batch x longest prompt).
    max_batch_tokens: int = 32_768
    #: None: the format's official default (descriptions only in ``lg1``).
    with_descriptions: bool | None = None
    decode_categories: bool = True
    max_answer_tokens: int = 20
    #: Compute the policy prefix's KV cache once and reuse it for every prompt.
    prefix_cache: bool = True

    def threshold_or(self, model_default: float | None) -> float:
        """The threshold in force: this config's, else the model's, else the default."""
        if self.threshold is not None:
            return self.threshold
        return DEFAULT_THRESHOLD if model_default is None else model_default


def length_batches(lengths: Sequence[int], max_batch: int, max_tokens: int) -> list[list[int]]:
    """Indices grouped by similar length, within the batch-size and padded-token budgets
    (sorted ascending, so each newcomer is its batch's longest)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) >= max_batch or lengths[i] * (len(cur) + 1) > max_tokens):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches
