"""What the Triton model does, without Triton: decode, validate, score, answer.

``model_repo/guard/<version>/model.py`` is a thin adapter over
:class:`GuardService`: it turns each Triton request into a list of
:class:`RawItem` and each answer back into output tensors. A request with any
bad item is answered with an error naming the item and the reason; the other
requests in the same batch are answered normally.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson

from guard.conversation import ConversationError, Role, check_conversation, turns_from_json
from guard.models import load_guard
from guard.prompt import PromptFormat
from guard.scoring import Guard, GuardRequest, GuardResult, Prepared, ScorerConfig
from guard.taxonomy import Policy, PolicyError, PolicyRegistry

CHECKPOINT_ENV = "GUARDSTREAM_MODEL_CHECKPOINT"
#: Every per-request error of the model starts with this; clients tell bad
#: input (never retried) from server trouble (retried) by it.
INVALID_REQUEST = "invalid request: "


@dataclass(frozen=True, slots=True)
class RawItem:
    conversation: bytes
    side: bytes
    policy_id: bytes


@dataclass(frozen=True, slots=True)
class ItemAnswer:
    p_unsafe: float
    verdict: str  # "safe" | "unsafe"
    categories_json: bytes  # [{"code": ..., "name": ...}]
    parse_error: bool
    policy_ref: str  # "id@version"


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    checkpoint: Path
    scorer: ScorerConfig
    default_policy_id: str = "llama-guard-1"
    policy_dir: Path | None = None
    max_content_chars: int = 65_536

    @classmethod
    def from_parameters(cls, params: Mapping[str, str], version_dir: Path) -> ServiceConfig:
        """Read the model's ``config.pbtxt`` parameters (string values).

        The checkpoint is ``<version_dir>/checkpoint`` when that exists (versions
        written by promotion carry their weights), else ``$GUARDSTREAM_MODEL_CHECKPOINT``,
        else the ``checkpoint`` parameter.
        """
        own = version_dir / "checkpoint"
        ckpt = (
            own
            if own.is_dir()
            else Path(os.environ.get(CHECKPOINT_ENV) or params.get("checkpoint", ""))
        )
        if not str(ckpt) or not ckpt.is_dir():
            raise FileNotFoundError(
                f"no guard checkpoint: {own} is absent and ${CHECKPOINT_ENV} / the "
                f"'checkpoint' parameter name no directory (got {str(ckpt)!r})"
            )
        policy_dir = params.get("policy_dir") or os.environ.get("GUARDSTREAM_POLICY__POLICY_DIR")
        return cls(
            checkpoint=ckpt,
            scorer=ScorerConfig(
                prompt_format=PromptFormat(params.get("prompt_format", "lg1")),
                threshold=float(params.get("threshold", "0.5")),
                max_prompt_tokens=int(params.get("max_prompt_tokens", "4096")),
                max_batch=int(params.get("max_batch", "64")),
                max_batch_tokens=int(params.get("max_batch_tokens", "32768")),
                with_descriptions=params.get("with_descriptions", "false").lower() == "true",
                prefix_cache=params.get("prefix_cache", "true").lower() == "true",
            ),
            default_policy_id=params.get("default_policy_id", "llama-guard-1"),
            policy_dir=Path(policy_dir) if policy_dir else None,
            max_content_chars=int(params.get("max_content_chars", "65536")),
        )


class GuardService:
    def __init__(self, guard: Guard, policies: PolicyRegistry, config: ServiceConfig):
        self.guard = guard
        self.policies = policies
        self.cfg = config
        policies.get(config.default_policy_id)  # fail at load time, not per request

    @classmethod
    def load(cls, config: ServiceConfig) -> GuardService:
        guard = load_guard(config.checkpoint, config.scorer)
        return cls(guard, PolicyRegistry.with_directory(config.policy_dir), config)

    def handle(self, requests: Sequence[Sequence[RawItem]]) -> list[list[ItemAnswer] | str]:
        """One answer list, or one error string, per request, in order."""
        prepared: list[list[Prepared] | str] = []
        for items in requests:
            try:
                prepared.append([self._prepare(item) for item in items])
            except (ConversationError, PolicyError, UnicodeDecodeError) as exc:
                prepared.append(INVALID_REQUEST + str(exc))
        flat = [p for req in prepared if not isinstance(req, str) for p in req]
        results = iter(self.guard.score_prepared(flat))
        out: list[list[ItemAnswer] | str] = []
        for req in prepared:
            if isinstance(req, str):
                out.append(req)
            else:
                out.append([self._answer(next(results), p.policy) for p in req])
        return out

    def _prepare(self, item: RawItem) -> Prepared:
        if len(item.conversation) > self.cfg.max_content_chars * 4 + 1024:
            raise ConversationError(
                f"conversation is {len(item.conversation)} bytes, over the limit"
            )
        side_text = item.side.decode("utf-8").strip().lower()
        if side_text not in (Role.USER.value, Role.AGENT.value):
            raise ConversationError(f"side must be 'user' or 'agent', got {side_text[:20]!r}")
        policy_id = item.policy_id.decode("utf-8").strip() or self.cfg.default_policy_id
        policy = self.policies.get(policy_id)
        turns = turns_from_json(item.conversation)
        checked = check_conversation(turns, Role(side_text), self.cfg.max_content_chars)
        return self.guard.prepare(GuardRequest(checked, Role(side_text), policy))

    @staticmethod
    def _answer(result: GuardResult, policy: Policy) -> ItemAnswer:
        cats = [{"code": c, "name": policy.by_code(c).name} for c in result.codes]
        return ItemAnswer(
            p_unsafe=result.p_unsafe,
            verdict="unsafe" if result.unsafe else "safe",
            categories_json=orjson.dumps(cats),
            parse_error=result.parse_error is not None,
            policy_ref=policy.ref,
        )
