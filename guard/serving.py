"""What the Triton model does, without Triton: decode, validate, score, answer.

``model_repo/guard/<version>/model.py`` is a thin adapter over
:class:`GuardService`: it turns each Triton request into a list of
:class:`guard.protocol.RawItem` and each answer back into output tensors. A
request with any bad item is answered with an error naming the reason; the
other requests in the same batch are answered normally.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.canary import canary_turns, problems, warnings
from guard.conversation import (
    ConversationError,
    Role,
    Turn,
    check_conversation,
    parse_role,
    turns_from_json,
)
from guard.errors import InvalidInput
from guard.loaders import load_guard
from guard.prompt import PromptFormat
from guard.protocol import CHECKPOINT_ENV, INVALID_REQUEST, ItemAnswer, RawItem
from guard.scoring import Guard, GuardRequest, GuardResult, ScorerConfig
from guard.settings import PolicySettings, policy_from_env
from guard.taxonomy import Policy, PolicyRegistry
from guard.windows import judged, sentences, views, windows

log = logging.getLogger(__name__)

#: Shortest window: below it a window that does not fit is not split again.
MIN_WINDOW_CHARS = 16


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    checkpoint: Path
    scorer: ScorerConfig
    #: None: the model's own (:attr:`guard.scoring.Guard.default_policy_id`).
    default_policy_id: str | None = None
    policy_dir: Path | None = None
    max_content_chars: int = 65_536
    #: Longest turn judged in one view; a longer one is also judged in windows of
    #: this many characters (:mod:`guard.windows`). None: the model's own size.
    window_chars: int | None = None
    #: Score the canary turns at load and refuse a model that fails them
    #: (:mod:`guard.canary`).
    canary: bool = True
    #: Torch device of this model instance (:func:`instance_device`); None: the first
    #: GPU if there is one, else the CPU.
    device: str | None = None

    @classmethod
    def for_evaluation(cls, params: Mapping[str, str]) -> ServiceConfig:
        """How the served model judges, from its parameters (config.pbtxt with the
        deployment's settings over them), for scoring in process: no checkpoint of its
        own, no canary."""
        policy_dir = params.get("policy_dir")
        return cls(
            checkpoint=Path("."),
            scorer=scorer_config(params),
            policy_dir=Path(policy_dir) if policy_dir else None,
            canary=False,
            **_params(params, default_policy_id=str, max_content_chars=int, window_chars=int),
        )

    def __post_init__(self) -> None:
        if self.window_chars is not None and self.window_chars < MIN_WINDOW_CHARS:
            raise ValueError(f"window_chars must be >= {MIN_WINDOW_CHARS}, got {self.window_chars}")

    @classmethod
    def from_parameters(
        cls, params: Mapping[str, str], version_dir: Path, device: str | None = None
    ) -> ServiceConfig:
        """Read the model's ``config.pbtxt`` parameters (string values).

        The deployment's settings override them (:func:`deployment_parameters`); a
        parameter set by neither keeps the default of :class:`ScorerConfig` or of
        this class. The checkpoint is ``<version_dir>/checkpoint`` when that exists
        (versions written by promotion carry their weights), else
        ``$GUARDSTREAM_MODEL_CHECKPOINT``, else the ``checkpoint`` parameter.
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
        params = {**params, **deployment_parameters(policy_from_env())}
        scorer = scorer_config(params)
        policy_dir = params.get("policy_dir")
        return cls(
            checkpoint=ckpt,
            scorer=scorer,
            policy_dir=Path(policy_dir) if policy_dir else None,
            device=device,
            **_params(
                params, default_policy_id=str, max_content_chars=int, window_chars=int, canary=_flag
            ),
        )


def instance_device(kind: str, device_id: str | int) -> str | None:
    """The torch device of one Triton model instance: ``cuda:<id>`` for a GPU instance
    (Triton places one per GPU listed in the instance group, or per visible GPU with
    ``KIND_AUTO``/``KIND_GPU`` and no ``gpus``), ``cpu`` for a CPU one, None for any other
    kind (``KIND_MODEL``: the model picks)."""
    kind = kind.strip().upper().removeprefix("KIND_")
    if kind == "GPU":
        return f"cuda:{int(device_id)}"
    if kind == "CPU":
        return "cpu"
    return None


def deployment_parameters(policy: PolicySettings) -> dict[str, str]:
    """The model parameters the deployment sets (``GUARDSTREAM_POLICY__*``, from the
    chart's ``policy`` values): they override ``config.pbtxt``'s, so that one setting
    reaches every replica of the served model and in-process scoring alike."""
    values = {
        "threshold": policy.threshold,
        "default_policy_id": policy.default_policy_id,
        "prompt_format": policy.prompt_format,
        "policy_dir": policy.policy_dir,
    }
    return {name: str(v) for name, v in values.items() if v is not None}


def scorer_config(params: Mapping[str, str]) -> ScorerConfig:
    """The scorer settings among the model's ``config.pbtxt`` parameters."""
    return ScorerConfig(
        **_params(
            params,
            prompt_format=PromptFormat,
            threshold=float,
            max_prompt_tokens=int,
            max_batch=int,
            max_batch_tokens=int,
            with_descriptions=_flag,
            prefix_cache=_flag,
        )
    )


def _params(params: Mapping[str, str], **parsers: Callable[[str], Any]) -> dict[str, Any]:
    """The parameters named in ``parsers`` that are set, parsed; absent ones keep the
    dataclass defaults, so each default is written once."""
    return {name: parse(params[name]) for name, parse in parsers.items() if name in params}


def _flag(raw: str) -> bool:
    return raw.strip().lower() == "true"


class GuardService:
    def __init__(self, guard: Guard[Any], policies: PolicyRegistry, config: ServiceConfig):
        self.guard = guard
        self.policies = policies
        self.cfg = config
        self.default_policy_id = config.default_policy_id or guard.default_policy_id
        policies.get(self.default_policy_id)  # fail at load time, not per request

    @classmethod
    def load(cls, config: ServiceConfig) -> GuardService:
        guard = load_guard(config.checkpoint, config.scorer, config.device)
        service = cls(guard, PolicyRegistry.with_directory(config.policy_dir), config)
        if config.canary:
            service.self_check()
        return service

    def self_check(self) -> None:
        """Score the canary turns under the default policy; raise ``RuntimeError``
        naming the likely cause when the results are unservable."""
        policy = self.policies.get(self.default_policy_id)
        results = self.guard.score(
            [GuardRequest(turns, Role.USER, policy) for turns in canary_turns()]
        )
        found = problems(results)
        fmt = getattr(self.guard, "format", None)
        if found:
            hint = (
                f"the checkpoint is prompted in format {fmt} with policy {policy.id}: if it is "
                "another Llama Guard generation, set prompt_format "
                "(GUARDSTREAM_POLICY__PROMPT_FORMAT)"
                if fmt is not None
                else f"policy {policy.id}"
            )
            raise RuntimeError(
                f"{self.cfg.checkpoint}: the model failed its self-check at load: "
                f"{'; '.join(found)}. Likely cause: {hint}."
            )
        for warning in warnings(results):
            log.warning("%s: self-check at load: %s", self.cfg.checkpoint, warning)

    def handle(self, requests: Sequence[Sequence[RawItem]]) -> list[list[ItemAnswer] | str]:
        """One answer list, or one error string, per request, in order."""
        prepared: list[list[Prepared] | str] = []
        for items in requests:
            try:
                prepared.append([self.prepare(item) for item in items])
            except InvalidInput as exc:
                prepared.append(INVALID_REQUEST + str(exc))
        flat = [v for req in prepared if not isinstance(req, str) for p in req for v in p.inputs]
        results = iter(self.guard.score_prepared(flat))
        out: list[list[ItemAnswer] | str] = []
        for req in prepared:
            if isinstance(req, str):
                out.append(req)
            else:
                out.append([answer_of(self._judged(p, results), p.policy) for p in req])
        return out

    def _judged(self, p: Prepared, results: Iterator[GuardResult]) -> GuardResult:
        whole = None if p.whole is None else next(results)
        parts = [next(results) for _ in p.parts]
        if whole is not None and not parts:
            return whole
        return judged(whole, parts, self.guard.window_threshold, self.guard.threshold)

    def prepare(self, item: RawItem) -> Prepared:
        """One item's model inputs (its whole view and its windows), or InvalidInput."""
        if len(item.conversation) > self.cfg.max_content_chars * 4 + 1024:
            raise ConversationError(
                f"conversation is {len(item.conversation)} bytes, over the limit"
            )
        try:
            side_text = item.side.decode("utf-8").strip().lower()
            policy_id = item.policy_id.decode("utf-8").strip() or self.default_policy_id
        except UnicodeDecodeError:
            raise ConversationError("SIDE and POLICY_ID must be UTF-8") from None
        side = parse_role(side_text, "side")
        policy = self.policies.get(policy_id)
        turns = turns_from_json(item.conversation)
        checked = check_conversation(turns, side, self.cfg.max_content_chars)
        views = judged_views(
            checked, self.cfg.window_chars or self.guard.window_chars, self.guard.sentence_views
        )
        try:
            whole = self.guard.prepare(GuardRequest(views[0], side, policy))
        except ConversationError:
            if len(views) == 1:
                raise
            whole = None  # the whole view of a long turn may not fit; its windows must
        parts = [p for v in views[1:] for p in self._prepare_window(v, side, policy)]
        return Prepared(policy, whole, parts)

    def _prepare_window(self, view: tuple[Turn, ...], side: Role, policy: Policy) -> list[Any]:
        """One window's model input, or, when it does not fit (its text takes more
        tokens per character than the window size allows for: CJK, emoji), the
        inputs of smaller windows of it, recursively."""
        try:
            return [self.guard.prepare(GuardRequest(view, side, policy))]
        except ConversationError:
            text = view[-1].content
            if len(text) < MIN_WINDOW_CHARS:
                raise
            # Halves, but never cut a sentence that a smaller window could keep whole.
            longest = max(map(len, sentences(text)))
            size = max(len(text) // 2 + 1, longest) if longest < len(text) else len(text) // 2 + 1
            halves = windows(text, size)
            return [
                p
                for half in halves
                for p in self._prepare_window((*view[:-1], Turn(view[-1].role, half)), side, policy)
            ]


@dataclass(frozen=True, slots=True)
class Prepared:
    """One item's model inputs: its whole view (None when it does not fit) and one
    per window (none for a turn that fits one view)."""

    policy: Policy
    whole: Any | None
    parts: list[Any]

    @property
    def inputs(self) -> list[Any]:
        return [self.whole, *self.parts] if self.whole is not None else self.parts


def judged_views(
    turns: tuple[Turn, ...], window_chars: int, sentence_views: bool = False
) -> list[tuple[Turn, ...]]:
    """The conversation as the model judges it: whole, and, when its last turn is
    longer than ``window_chars``, once more per view of that turn (its windows, and
    with ``sentence_views`` its sentences; same context; :func:`guard.windows.views`)."""
    last = turns[-1]
    parts = views(last.content, window_chars, sentence_views)
    if len(parts) == 1:
        return [turns]
    return [turns, *((*turns[:-1], Turn(last.role, w)) for w in parts)]


def answer_of(result: GuardResult, policy: Policy) -> ItemAnswer:
    return ItemAnswer(
        p_unsafe=result.p_unsafe,
        unsafe=result.unsafe,
        categories=tuple(policy.by_code(c).ref for c in result.codes),
        parse_error=result.parse_error is not None,
        policy=policy.ref,
    )
