"""The Llama Guard method: a causal LM scores a turn with one forward pass.

Score = P(first answer token is ``unsafe``), the softmax over the first-step
logits of the ``safe`` and ``unsafe`` tokens (ids looked up from the
tokenizer). A turn whose most likely first token is neither word is a parse
error: it is reported unsafe and flagged, never safe. The category line is
decoded only for unsafe turns. Kind ``causal-lm`` in :mod:`guard.loaders`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from guard.answer import AnswerParseError, parse_answer
from guard.conversation import ConversationError, Role, Turn, check_conversation
from guard.families import POLICY_OF, Detected, detect, format_for
from guard.prompt import ANSWER_SEPARATOR, PromptFormat, prompt_prefix, render_prompt
from guard.scoring import NO_VERDICT, GuardRequest, GuardResult, ScorerConfig, length_batches
from guard.taxonomy import BUILTIN_POLICIES, Category, Policy, PolicyRef

log = logging.getLogger(__name__)


#: Prompts checked for one side under one policy share their prefix.
PrefixKey = tuple[PolicyRef, Role]


@dataclass(frozen=True, slots=True)
class CausalLMPrepared:
    """A validated request as prompt token ids."""

    policy: Policy
    ids: list[int]
    #: Leading tokens shared by every prompt with this ``prefix_key`` (0: none).
    prefix_len: int = 0
    prefix_key: PrefixKey | None = None


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(device: torch.device) -> torch.dtype:
    """bf16 on GPUs, fp32 on CPU."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def first_answer_token(tokenizer: object, prompt: str, word: str) -> int:
    """The id of ``word``'s first token when it directly follows ``prompt``.

    Tokenizing the prompt with and without the word keeps this right for
    SentencePiece (leading-space pieces) and byte-level BPE alike.
    """
    base = tokenizer(prompt, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    full = tokenizer(prompt + word, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    if full[: len(base)] != base or len(full) <= len(base):
        raise ValueError(f"the tokenizer merges the answer {word!r} into the prompt's end")
    return int(full[len(base)])


def answer_token_ids(tokenizer: object, fmt: PromptFormat) -> tuple[int, int]:
    """``(safe_id, unsafe_id)``: the first tokens of the two answers in format ``fmt``."""
    sample = render_prompt((Turn(Role.USER, "hi"),), Role.USER, _SAMPLE_POLICY, fmt)
    sep = ANSWER_SEPARATOR[fmt]
    safe = first_answer_token(tokenizer, sample, sep + "safe")
    unsafe = first_answer_token(tokenizer, sample, sep + "unsafe")
    if safe == unsafe:
        raise ValueError("'safe' and 'unsafe' start with the same token in this tokenizer")
    return safe, unsafe


_CANARY = (
    Turn(Role.USER, "How do I bake bread?"),
    Turn(Role.AGENT, "Mix flour, water, yeast and salt, then knead and bake."),
)


def check_chat_template(
    tokenizer: object, fmt: PromptFormat, with_descriptions: bool | None
) -> None:
    """Where the checkpoint has a chat template, the prompts must be the ones it
    renders: for a user and an agent turn, the template's text (after its BOS)
    must be the start of ours (ours adds the blank line after an assistant header).
    A mismatch fails the load, naming where the two first differ."""
    template = getattr(tokenizer, "chat_template", None)
    if not template or "Task: Check if there is unsafe content" not in str(template):
        return  # no template, or not a Llama Guard one (a base model's chat template)
    policy = next(p for p in BUILTIN_POLICIES if p.id == POLICY_OF[fmt])
    bos = str(getattr(tokenizer, "bos_token", "") or "")
    for n in (1, 2):
        turns = _CANARY[:n]
        messages: list[dict[str, Any]] = [
            {"role": "user" if t.role is Role.USER else "assistant", "content": t.content}
            for t in turns
        ]
        if fmt in (PromptFormat.LG3_1B, PromptFormat.LG4):  # these take content parts
            messages = [
                {"role": m["role"], "content": [{"type": "text", "text": m["content"]}]}
                for m in messages
            ]
        theirs = str(tokenizer.apply_chat_template(messages, tokenize=False))  # type: ignore[attr-defined]
        theirs = theirs.lstrip(" ").removeprefix(bos)
        ours = render_prompt(
            turns, turns[-1].role, policy, fmt, with_descriptions=with_descriptions
        )
        if not ours.startswith(theirs) or len(ours) - len(theirs) > 2:
            at = next(
                (i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
                min(len(ours), len(theirs)),
            )
            raise ValueError(
                f"the checkpoint's chat template does not render format {fmt}'s prompt "
                f"(policy {policy.id}): they differ at character {at}: template "
                f"{theirs[at : at + 60]!r}, guardstream {ours[at : at + 60]!r}; set "
                "prompt_format (and with_descriptions) to the checkpoint's generation"
            )


@dataclass(frozen=True)
class FirstStep:
    """One forward pass over a batch of prompts: the next-token logits [B, V], and
    what decoding continues from: the KV cache, the attention mask (right padding
    is masked) and each row's next position."""

    logits: torch.Tensor
    past: Any
    mask: torch.Tensor
    next_position: torch.Tensor


class CausalLMGuard:
    """A Llama-Guard-style causal LM behind a batch ``score`` call."""

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: object,
        config: ScorerConfig | None = None,
        name: str = "",
        detected: Detected | None = None,
    ) -> None:
        """``detected``: the checkpoint's generation; the config's format overrides
        it, and without either the format is ``lg1``."""
        self.model = model.eval()
        self.tok = tokenizer
        self.cfg = config or ScorerConfig()
        self.format = self.cfg.prompt_format or (detected.format if detected else PromptFormat.LG1)
        self.default_policy_id = POLICY_OF[self.format]
        self.threshold = self.cfg.threshold_or(None)
        self.name = name
        #: Half the prompt budget in characters: a window (at most a token per
        #: character) leaves room for the policy and the context.
        self.window_chars = max(64, self.cfg.max_prompt_tokens // 2)
        self.window_threshold = self.threshold
        #: A causal LM attends to each token rather than averaging: packed windows
        #: suffice, and a prompt per sentence would multiply its cost.
        self.sentence_views = False
        self.device = next(model.parameters()).device
        self.specials = tuple(
            sorted(set(tokenizer.all_special_tokens) | set(tokenizer.get_added_vocab()))  # type: ignore[attr-defined]
        )
        self.bos_id: int | None = tokenizer.bos_token_id  # type: ignore[attr-defined]
        pad = tokenizer.pad_token_id  # type: ignore[attr-defined]
        self.pad_id: int = pad if pad is not None else (tokenizer.eos_token_id or 0)  # type: ignore[attr-defined]
        #: Tokens that end an answer: the model's end-of-sequence ids and the tokenizer's.
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self.stop_ids = {
            int(t)
            for t in (*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id)  # type: ignore[attr-defined]
            if t is not None
        }
        self.safe_id, self.unsafe_id = answer_token_ids(tokenizer, self.format)
        self._prefixes: dict[PrefixKey, tuple[list[int], Any]] = {}
        self._head = model.get_output_embeddings()  # type: ignore[operator]
        #: The decoder stack (hidden states, no head). Llama-family causal LMs keep it
        #: as ``.model``; Llama 4's ``base_model`` / ``get_decoder()`` name the whole LM.
        body = getattr(model, "model", None)
        self._body: torch.nn.Module = (
            body if isinstance(body, torch.nn.Module) else model.get_decoder()  # type: ignore[operator]
        )

    @classmethod
    def load(
        cls,
        checkpoint: Path | str,
        config: ScorerConfig | None = None,
        device: torch.device | None = None,
    ) -> CausalLMGuard:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device = device or pick_device()
        checkpoint = Path(checkpoint)
        tok = AutoTokenizer.from_pretrained(str(checkpoint))
        detected = detect(checkpoint)
        cfg = config or ScorerConfig()
        fmt = format_for(checkpoint, cfg.prompt_format)
        if cfg.prompt_format is None:
            how = f"from {detected.evidence}" if detected else "nothing in the checkpoint says"
            log.info("%s: prompt format %s (%s)", checkpoint.name, fmt, how)
        if not (detected and detected.from_manifest and detected.format is fmt):
            # A model this project trained keeps its base's template but records the
            # format it was trained in; that record is what it is held to.
            check_chat_template(tok, fmt, cfg.with_descriptions)
        model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=pick_dtype(device))
        model.to(device)  # type: ignore[arg-type]
        return cls(model, tok, cfg, name=checkpoint.name, detected=detected)

    # -- prompts ---------------------------------------------------------------

    def encode(self, req: GuardRequest) -> list[int]:
        """Token ids of the prompt; the oldest context turns are dropped to fit, and a
        response check keeps at least the end of the user turn it answers.

        Raises :class:`ConversationError` when even the turn alone is too long.
        """
        for turns in _shrinking(req.turns, req.side):
            ids = self._ids(self.render(turns, req.side, req.policy))
            if len(ids) <= self.cfg.max_prompt_tokens:
                return ids
        raise ConversationError(
            f"the turn does not fit in {self.cfg.max_prompt_tokens} prompt tokens"
        )

    def render(self, turns: Sequence[Turn], side: Role, policy: Policy) -> str:
        return render_prompt(
            turns,
            side,
            policy,
            self.format,
            with_descriptions=self.cfg.with_descriptions,
            special_tokens=self.specials,
        )

    def _ids(self, text: str) -> list[int]:
        ids: list[int] = self.tok(text, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
        return ([self.bos_id] if self.bos_id is not None else []) + ids

    # -- scoring ---------------------------------------------------------------

    def prepare(self, req: GuardRequest) -> CausalLMPrepared:
        ids = self.encode(req)
        if not self.cfg.prefix_cache:
            return CausalLMPrepared(req.policy, ids)
        key = (req.policy.ref, req.side)
        prefix = self._prefix_ids(key, req.side, req.policy)
        if ids[: len(prefix)] != prefix or len(ids) == len(prefix):
            return CausalLMPrepared(req.policy, ids)  # tokenization merged across the boundary
        return CausalLMPrepared(req.policy, ids, len(prefix), key)

    def _prefix_ids(self, key: PrefixKey, side: Role, policy: Policy) -> list[int]:
        if key not in self._prefixes:
            text = prompt_prefix(
                side, policy, self.format, with_descriptions=self.cfg.with_descriptions
            )
            self._prefixes[key] = (self._ids(text), None)
        return self._prefixes[key][0]

    @torch.inference_mode()
    def score_prepared(self, items: Sequence[CausalLMPrepared]) -> list[GuardResult]:
        """Score prepared items; those sharing a cached prefix run only their suffix."""
        results: list[GuardResult | None] = [None] * len(items)
        for rows, step in self._first_steps(items):
            for i, r in zip(
                rows, self._results(step, [items[i].policy for i in rows]), strict=True
            ):
                results[i] = r
            del step  # its KV cache must not stay alive during the next pass
        return [r for r in results if r is not None]

    @torch.inference_mode()
    def unsafe_answers(self, requests: Sequence[GuardRequest]) -> list[str]:
        """What the model writes for each turn after a forced ``unsafe`` (the answer
        whose category line a verdict reads), decoded in batches exactly as
        :meth:`score` does: for diagnosing a checkpoint's answers."""
        items = [self.prepare(r) for r in requests]
        texts = [""] * len(items)
        for rows, step in self._first_steps(items):
            for j, text in self._decode_answers(step, range(len(rows))).items():
                texts[rows[j]] = text
            del step
        return texts

    def _first_steps(
        self, items: Sequence[CausalLMPrepared]
    ) -> Iterator[tuple[list[int], FirstStep]]:
        """The forward passes over ``items``, in length batches: those sharing a cached
        prefix run only their suffix. Yields the indices of each pass's rows and the pass."""
        groups: dict[PrefixKey | None, list[int]] = {}
        for i, p in enumerate(items):
            groups.setdefault(p.prefix_key if p.prefix_len else None, []).append(i)
        for key, idx in groups.items():
            if key is None:
                seqs = [items[i].ids for i in idx]
                for chunk in self._length_batches(seqs):
                    yield [idx[c] for c in chunk], self._first_step([seqs[c] for c in chunk])
                continue
            prefix, cache = self._prefixes[key]
            if cache is None:
                ids = torch.tensor([prefix], device=self.device)
                cache = self._body(input_ids=ids, use_cache=True).past_key_values
                self._prefixes[key] = (prefix, cache)
            suffixes = [items[i].ids[len(prefix) :] for i in idx]
            for chunk in self._length_batches(suffixes):
                rows = [idx[c] for c in chunk]
                yield rows, self._suffix_step(cache, len(prefix), [suffixes[c] for c in chunk])

    def _results(self, step: FirstStep, policies: Sequence[Policy]) -> list[GuardResult]:
        """Verdicts of one forward pass's rows; the category lines of the unsafe ones
        are decoded together, continuing from that pass's KV cache."""
        logits = step.logits
        pair = torch.stack([logits[:, self.safe_id], logits[:, self.unsafe_id]], dim=1)
        p_unsafe = torch.softmax(pair.float(), dim=1)[:, 1].tolist()
        top = logits.argmax(dim=1).tolist()
        answered = (self.safe_id, self.unsafe_id)
        unsafe = [
            j
            for j, (p, t) in enumerate(zip(p_unsafe, top, strict=True))
            if t in answered and p >= self.threshold
        ]
        texts = self._decode_answers(step, unsafe) if self.cfg.decode_categories else {}
        return [
            self._verdict(policy, p_unsafe[j], top[j], texts.get(j))
            for j, policy in enumerate(policies)
        ]

    def _suffix_step(self, cache: Any, prefix_len: int, batch: Sequence[list[int]]) -> FirstStep:
        """Next-token logits after prefix + each suffix, reusing the prefix's KV cache."""
        past = copy.deepcopy(cache)
        past.batch_repeat_interleave(len(batch))
        ids, mask, lengths = self._right_padded(batch)
        full_mask = torch.cat(
            [torch.ones((len(batch), prefix_len), dtype=mask.dtype, device=self.device), mask],
            dim=1,
        )
        positions = (prefix_len + torch.arange(ids.shape[1], device=self.device)).expand_as(ids)
        out = self._body(
            input_ids=ids,
            attention_mask=full_mask,
            position_ids=positions,
            past_key_values=past,
            use_cache=True,
        )
        last = out.last_hidden_state[torch.arange(len(batch), device=self.device), lengths - 1]
        return FirstStep(
            self._head(last).float(), out.past_key_values, full_mask, prefix_len + lengths
        )

    def score(self, requests: Sequence[GuardRequest]) -> list[GuardResult]:
        """Score already-validated requests (see :meth:`encode` for the limits)."""
        return self.score_prepared([self.prepare(r) for r in requests])

    def _verdict(self, policy: Policy, p: float, top: int, text: str | None) -> GuardResult:
        """``text``: the decoded category line (None when categories are not decoded)."""
        if top not in (self.safe_id, self.unsafe_id):
            return GuardResult(p, True, (), NO_VERDICT)
        if p < self.threshold:
            return GuardResult(p, False, ())
        if text is None:
            return GuardResult(p, True, ())
        try:
            parsed = parse_answer(text, policy.codes)
        except AnswerParseError as exc:
            return GuardResult(p, True, (), str(exc))
        if not parsed.unsafe:
            return GuardResult(p, True, (), "score says unsafe but the answer says safe")
        return GuardResult(p, True, parsed.codes)

    def _decode_answers(self, step: FirstStep, rows: Sequence[int]) -> dict[int, str]:
        """Greedy decode of the category lines of ``rows`` of a forward pass, after a
        forced ``unsafe`` token, all rows together: each new token is one forward of
        one token per row over that pass's KV cache (prefix included), so an unsafe
        turn costs its first pass plus a few one-token steps, not a prompt of its own."""
        if not rows:
            return {}
        idx = torch.tensor(list(rows), device=self.device)
        past = step.past
        if len(rows) < step.logits.shape[0]:
            past.batch_select_indices(idx)
        mask, next_pos = step.mask[idx], step.next_position[idx]
        token = torch.full((len(rows), 1), self.unsafe_id, device=self.device)
        new: list[list[int]] = [[] for _ in rows]
        done = [False] * len(rows)
        for _ in range(self.cfg.max_answer_tokens):
            mask = torch.cat([mask, torch.ones_like(token)], dim=1)
            out = self._body(
                input_ids=token,
                attention_mask=mask,
                position_ids=next_pos[:, None],
                past_key_values=past,
                use_cache=True,
            )
            past, next_pos = out.past_key_values, next_pos + 1
            chosen = self._head(out.last_hidden_state[:, -1]).argmax(dim=-1)
            for k, t in enumerate(chosen.tolist()):
                if not done[k]:
                    done[k] = t in self.stop_ids
                    if not done[k]:
                        new[k].append(t)
            if all(done):
                break
            token = chosen[:, None]
        return {
            j: self.tok.decode([self.unsafe_id, *t], skip_special_tokens=True)  # type: ignore[attr-defined]
            for j, t in zip(rows, new, strict=True)
        }

    def _length_batches(self, encoded: Sequence[list[int]]) -> list[list[int]]:
        return length_batches(
            [len(x) for x in encoded], self.cfg.max_batch, self.cfg.max_batch_tokens
        )

    def _right_padded(
        self, batch: Sequence[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lengths = torch.tensor([len(x) for x in batch], device=self.device)
        width = int(lengths.max())
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long, device=self.device)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(batch):
            ids[row, : len(seq)] = torch.tensor(seq, device=self.device)
            mask[row, : len(seq)] = 1
        return ids, mask, lengths

    def _first_step(self, batch: Sequence[list[int]]) -> FirstStep:
        """Full-vocabulary logits of the next token after each prompt, [B, V].

        Right padding keeps every real token at its true position; only the last
        real position of each row goes through the output head.
        """
        ids, mask, lengths = self._right_padded(batch)
        out = self._body(input_ids=ids, attention_mask=mask, use_cache=True)
        last = out.last_hidden_state[torch.arange(len(batch), device=self.device), lengths - 1]
        return FirstStep(self._head(last).float(), out.past_key_values, mask, lengths)


def _shrinking(turns: tuple[Turn, ...], side: Role) -> Iterator[tuple[Turn, ...]]:
    """Ever shorter conversations that still end with the turn to judge: the oldest
    turns first; for a response check, then the last user turn cut to its end
    (the part the answer follows), halving its length each time."""
    for start in range(len(turns)):
        try:
            yield check_conversation(turns[start:], side)
        except ConversationError:
            break
    if side is Role.AGENT:
        user = next((t for t in reversed(turns[:-1]) if t.role is Role.USER), None)
        text = user.content if user is not None else ""
        while len(text) > 1:
            text = text[len(text) // 2 :]
            if text.strip():
                yield (Turn(Role.USER, text), turns[-1])


#: Any policy renders the same prompt ending; this one finds the answer token ids.
_SAMPLE_POLICY = Policy("sample", "1", (Category("X1", "x"),))
