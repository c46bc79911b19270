"""Retraining an ``encoder-head`` guard (the shipped default model) from reviewed turns.

The encoder (MiniLM with its merged LoRA adapter) stays as it is. Each example is
embedded exactly as the served model embeds it, and the heads move from the serving
weights toward the examples: mean cross-entropy on the examples plus ``pull / 2`` times
the squared distance to the serving weights. The pull keeps a few hundred reviews from
erasing what the heads learnt from the public corpus, whose rows a deployment does not
have. Each side's head learns from its own side (user turns: the prompt head; agent
turns: the response head); the category head from the unsafe examples of the policy it
was trained for (``llama-guard-1``).
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from guard.conversation import ConversationError, Role, turns_to_json
from guard.encoder import (
    Dense,
    EncoderHeadGuard,
    EncoderPrepared,
    Heads,
    SentenceEncoder,
    encoder_path,
    mean_pooled,
)
from guard.errors import InvalidInput
from guard.loaders import MANIFEST, read_manifest
from guard.protocol import RawItem
from guard.scoring import GuardRequest, ScorerConfig, length_batches
from guard.serving import GuardService, ServiceConfig
from guard.taxonomy import PolicyRegistry
from training.dataset import Example

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HeadUpdate:
    #: Weight of the squared distance to the serving weights (larger: smaller moves).
    pull: float = 0.05
    #: L-BFGS iterations per head.
    steps: int = 200


def updated_dense(
    dense: Dense, x: np.ndarray, y: np.ndarray, cfg: HeadUpdate, balanced: bool = True
) -> Dense:
    """``dense`` moved toward logits that fit the 0/1 targets ``y`` ([N, outputs]) of
    inputs ``x`` ([N, D]), held near where it was by ``cfg.pull``. ``balanced``: each
    output's positive and negative rows weigh the same in total (reviews are skewed)."""
    if len(x) == 0:
        return dense
    xs = torch.tensor(x, dtype=torch.float32)
    ys = torch.tensor(y, dtype=torch.float32)
    params = [torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in dense.weights]
    params += [torch.tensor(a, dtype=torch.float32, requires_grad=True) for a in dense.biases]
    start = [p.detach().clone() for p in params]
    n = len(dense.weights)
    weight = torch.ones_like(ys)
    if balanced:
        pos = ys.sum(0).clamp(min=1.0)
        neg = (1 - ys).sum(0).clamp(min=1.0)
        weight = torch.where(ys > 0.5, len(ys) / (2 * pos), len(ys) / (2 * neg))
    opt = torch.optim.LBFGS(params, max_iter=cfg.steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        h = xs
        for i in range(n):
            h = h @ params[i] + params[n + i]
            if i < n - 1:
                h = torch.relu(h)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(h, ys, weight=weight)
        loss = loss + cfg.pull / 2 * sum(
            ((p - p0) ** 2).sum() for p, p0 in zip(params, start, strict=True)
        )
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    opt.step(closure)  # type: ignore[no-untyped-call]
    arrays = [p.detach().numpy().astype(np.float32) for p in params]
    return Dense(tuple(arrays[:n]), tuple(arrays[n:]))


def retrain_heads(
    base: Path,
    examples: Sequence[Example],
    policies: PolicyRegistry,
    out_dir: Path,
    cfg: HeadUpdate = HeadUpdate(),
    lineage: dict[str, object] | None = None,
) -> Path:
    """Copy the ``encoder-head`` checkpoint ``base`` to ``out_dir/model`` with its heads
    retrained on ``examples``; return that directory."""
    guard = EncoderHeadGuard.load(base)
    heads = guard.heads
    kept, inputs = _prepared(guard, examples, policies)
    skipped = len(examples) - len(kept)
    examples = kept
    emb = guard.embed([p.ids for p in inputs])
    unsafe = np.array([[float(e.unsafe)] for e in examples], np.float32)
    user = np.array([e.side is Role.USER for e in examples])
    prompt = updated_dense(heads.prompt, emb[user], unsafe[user], cfg)
    response = updated_dense(heads.response, emb[~user], unsafe[~user], cfg)
    with_codes = np.array(
        [e.unsafe and e.policy_id == guard.default_policy_id for e in examples], bool
    )
    targets = np.array(
        [[float(c in e.categories) for c in heads.codes] for e in examples], np.float32
    ).reshape(len(examples), len(heads.codes))
    categories = updated_dense(
        heads.categories, emb[with_codes], targets[with_codes], cfg, balanced=False
    )
    final = out_dir / "model"
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(base, final)
    manifest = read_manifest(final)
    new = Heads(prompt, response, categories, heads.codes)
    new.save(final / str(manifest.get("heads", "heads.npz")))
    manifest["retrained"] = {
        "method": "heads warm-started from the base, L2 pull to its weights",
        "pull": cfg.pull,
        "examples": len(examples),
        "left_out_too_long": skipped,
        "by_side": {"user": int(user.sum()), "agent": int((~user).sum())},
        **(lineage or {}),
    }
    (final / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return final


@dataclass(frozen=True, slots=True)
class AdapterUpdate:
    """Continuing the encoder's LoRA adapter and the side heads from the serving model."""

    epochs: int = 2
    #: Learning rate of the adapter's LoRA weights (AdamW, linear decay).
    lr: float = 2e-4
    #: Learning rate of the prompt and response heads.
    head_lr: float = 2e-3
    batch: int = 16
    #: Training inputs are the served views cut to this many tokens (head and tail).
    train_len: int = 128
    #: Total weight of the replay rows relative to the reviews' (1: the same).
    replay_weight: float = 1.0
    seed: int = 0


#: Largest weight of one review relative to the average review (a lone review of a
#: rare side and label must not steer the update, nor a poisoner through it).
MAX_REVIEW_WEIGHT = 10.0


def _side_weights(examples: Sequence[Example], replay: int, replay_weight: float) -> np.ndarray:
    """Per-row loss weights: within each side of the reviews, the safe and the unsafe
    rows weigh the same in total (half the side's rows each), no review more than
    :data:`MAX_REVIEW_WEIGHT`; the ``replay`` rows at the end together weigh
    ``replay_weight`` times the reviews."""
    reviews = examples[: len(examples) - replay]
    w = np.ones(len(examples), np.float64)
    for side in (Role.USER, Role.AGENT):
        on_side = [i for i, e in enumerate(reviews) if e.side is side]
        for label in (False, True):
            idx = [i for i in on_side if reviews[i].unsafe is label]
            if idx:
                w[idx] = min(len(on_side) / (2 * len(idx)), MAX_REVIEW_WEIGHT)
    if replay:
        w[len(reviews) :] = replay_weight * w[: len(reviews)].sum() / replay
    return w / w.mean()


def retrain_adapter_and_heads(
    base: Path,
    examples: Sequence[Example],
    replay: Sequence[Example],
    policies: PolicyRegistry,
    out_dir: Path,
    cfg: AdapterUpdate = AdapterUpdate(),
    heads_cfg: HeadUpdate = HeadUpdate(),
    lineage: dict[str, object] | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Copy the ``encoder-head`` checkpoint ``base`` to ``out_dir/model`` with its LoRA
    adapter and side heads trained further on ``examples`` (the reviews) and ``replay``
    (rows the base model learnt from, so that it does not forget them), then its
    category head moved as :func:`retrain_heads` moves it; return that directory.

    For what the frozen encoder cannot see (a language, a slang, a template family),
    moving the heads is not enough: the embeddings themselves must separate the pattern.
    """
    from peft import PeftModel

    manifest = read_manifest(base)
    adapter_name = manifest.get("adapter")
    if not adapter_name:
        raise ValueError(f"{base}: no adapter to continue; retrain the heads alone")
    guard = EncoderHeadGuard.load(base)
    reviews, review_inputs = _prepared(guard, examples, policies)
    rehearsed, replay_inputs = _prepared(guard, replay, policies)
    rows, inputs, n_replay = (
        [*reviews, *rehearsed],
        [*review_inputs, *replay_inputs],
        len(rehearsed),
    )
    weights = torch.tensor(_side_weights(rows, n_replay, cfg.replay_weight), dtype=torch.float32)
    ids = [_cut(p.ids, cfg.train_len) for p in inputs]
    y = torch.tensor([e.unsafe for e in rows], dtype=torch.float32)
    agent = torch.tensor([e.side is Role.AGENT for e in rows])

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    raw = SentenceEncoder.load(
        encoder_path(manifest["encoder"]["package"]), guard.encoder.view, device=device
    )
    model = PeftModel.from_pretrained(raw.model, str(base / adapter_name), is_trainable=True)
    heads = [_torch_dense(guard.heads.prompt, device), _torch_dense(guard.heads.response, device)]
    y, agent, weights = y.to(device), agent.to(device), weights.to(device)
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr},
            {"params": [p for h in heads for p in h], "lr": cfg.head_lr},
        ],
        weight_decay=0.0,
    )
    batches = list(length_batches([len(x) for x in ids], cfg.batch, cfg.batch * cfg.train_len))
    steps = max(1, len(batches) * cfg.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 - s / steps)
    model.train()
    start, step = time.monotonic(), 0
    for _ in range(cfg.epochs):
        rng.shuffle(batches)
        for b in batches:
            idx = torch.tensor(b, device=device)
            pooled = mean_pooled(model, [ids[i] for i in b], raw.pad_id)
            logit = torch.where(agent[idx], _forward(heads[1], pooled), _forward(heads[0], pooled))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logit, y[idx], weight=weights[idx]
            )
            opt.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
            sched.step()
            step += 1
            if step % 25 == 0 or step == steps:
                log(
                    f"adapter step {step}/{steps} loss {loss.item():.3f} "
                    f"({time.monotonic() - start:.0f} s)"
                )
    final = out_dir / "model"
    if final.exists():
        shutil.rmtree(final)
    shutil.copytree(base, final)
    shutil.rmtree(final / adapter_name)
    model.save_pretrained(str(final / adapter_name))
    (final / adapter_name / "README.md").unlink(missing_ok=True)  # PEFT's empty model card
    merged = SentenceEncoder(model.merge_and_unload().eval(), raw.tok, raw.view)
    guard.encoder = merged
    emb = guard.embed([p.ids for p in inputs])
    with_codes = np.array([e.unsafe and e.policy_id == guard.default_policy_id for e in rows], bool)
    targets = np.array(
        [[float(c in e.categories) for c in guard.heads.codes] for e in rows], np.float32
    ).reshape(len(rows), len(guard.heads.codes))
    categories = updated_dense(
        guard.heads.categories, emb[with_codes], targets[with_codes], heads_cfg, balanced=False
    )
    new = Heads(_numpy_dense(heads[0]), _numpy_dense(heads[1]), categories, guard.heads.codes)
    new.save(final / str(manifest.get("heads", "heads.npz")))
    manifest = read_manifest(final)
    manifest["retrained"] = {
        "method": "LoRA adapter and side heads continued from the base, with replay rows; "
        "category head warm-started, L2 pull",
        "adapter": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "pull": heads_cfg.pull,
        "examples": len(rows) - n_replay,
        "replay": n_replay,
        "left_out_too_long": len(examples) + len(replay) - len(rows),
        "steps": steps,
        "seconds": round(time.monotonic() - start, 1),
        **(lineage or {}),
    }
    (final / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return final


def _prepared(
    guard: EncoderHeadGuard, examples: Sequence[Example], policies: PolicyRegistry
) -> tuple[list[Example], list[EncoderPrepared]]:
    """The examples the model takes whole, with their encoder inputs."""
    kept, inputs = [], []
    for e in examples:
        try:
            inputs.append(guard.prepare(GuardRequest(e.turns, e.side, policies.get(e.policy_id))))
        except ConversationError:  # longer than the model takes whole: served in windows
            continue
        kept.append(e)
    return kept, inputs


def _cut(ids: list[int], budget: int) -> list[int]:
    if len(ids) <= budget:
        return ids
    return [ids[0], *SentenceEncoder.head_tail(ids[1:-1], budget - 2), ids[-1]]


def _torch_dense(dense: Dense, device: str = "cpu") -> list[torch.Tensor]:
    return [
        torch.tensor(a, dtype=torch.float32, device=device, requires_grad=True)
        for a in (*dense.weights, *dense.biases)
    ]


def _forward(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    n = len(params) // 2
    h = x
    for i in range(n):
        h = h @ params[i] + params[n + i]
        if i < n - 1:
            h = torch.relu(h)
    return h[:, 0]


def _numpy_dense(params: list[torch.Tensor]) -> Dense:
    arrays = [p.detach().cpu().numpy().astype(np.float32) for p in params]
    n = len(arrays) // 2
    return Dense(tuple(arrays[:n]), tuple(arrays[n:]))


def hold_operating_point(
    candidate: Path,
    serving: EncoderHeadGuard,
    safe: Sequence[Example],
    policies: PolicyRegistry,
    config: ServiceConfig | None = None,
    scorer: ScorerConfig | None = None,
    reviewed: Sequence[Example] = (),
    min_reviewed: int = 30,
) -> dict[str, dict[str, Any]]:
    """Shift the bias of the candidate's side heads (``candidate`` is changed in place)
    so that, per side, its false-positive rate on the ``safe`` rows is as close to the
    ``serving`` model's as it can be without exceeding it: what it gains is then recall
    at the same false-positive rate, not a moved threshold.

    ``reviewed``: safe turns of the deployment's own traffic (reviewed, kept out of
    training and validation). A side with at least ``min_reviewed`` of them is held on
    them too: its shift is the lower of the two, so that the candidate exceeds the
    serving model's false-positive rate on neither set.

    Verdicts are the served ones (``config``: windows for long turns, each model at its
    own threshold and window threshold), so one number per row decides: its margin,
    the largest of (whole view's logit - turn threshold's logit) and (best window's
    logit - window threshold's logit); a shift flags the rows whose margin plus the
    shift is >= 0. The cut falls midway between two distinct candidate margins (rows
    with equal margins, such as repeated texts, stay on one side); when the serving
    model flags none, the candidate's highest safe row keeps the serving model's
    distance below the bar. Returns, per side, each set's rows and rates and the shift
    (also recorded in the candidate's manifest, ``operating_point``)."""
    guard = EncoderHeadGuard.load(candidate, scorer)
    service_cfg = config or ServiceConfig(Path("."), ScorerConfig(), canary=False)
    sets = {"calibration": safe, "reviewed": reviewed}
    margins: dict[str, tuple[np.ndarray, np.ndarray, list[Example]]] = {}
    for name, rows in sets.items():
        if not rows:
            margins[name] = (np.zeros(0), np.zeros(0), [])
            continue
        served, kept = _served_margins(serving, serving.heads, rows, policies, service_cfg)
        cand, _ = _served_margins(guard, guard.heads, kept, policies, service_cfg)
        margins[name] = (served, cand, kept)
    heads = {Role.USER: guard.heads.prompt, Role.AGENT: guard.heads.response}
    report: dict[str, dict[str, Any]] = {}
    for side in (Role.USER, Role.AGENT):
        on_side: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for name, (served, cand, kept) in margins.items():
            idx = np.array([e.side is side for e in kept], bool)
            on_side[name] = (served[idx], cand[idx])
        held = held_shift(on_side, {"reviewed": min_reviewed})
        if held is None:
            log.warning("operating point: no calibration rows on the %s side", side.value)
            continue
        heads[side] = _shifted(heads[side], held["shift"])
        report[side.value] = held
    manifest = read_manifest(candidate)
    new = Heads(heads[Role.USER], heads[Role.AGENT], guard.heads.categories, guard.heads.codes)
    new.save(candidate / str(manifest.get("heads", "heads.npz")))
    manifest["operating_point"] = {
        "left_out": sum(len(rows) - len(margins[n][2]) for n, rows in sets.items()),
        "sides_without_rows": [s.value for s in Role if s.value not in report],
        **report,
    }
    (candidate / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return report


def held_shift(
    sets: Mapping[str, tuple[np.ndarray, np.ndarray]], min_rows: Mapping[str, int]
) -> dict[str, Any] | None:
    """One side's shift: ``sets`` maps a set's name to the (serving, candidate) margins of
    its safe rows; the first set is required (None without rows), another counts when it
    has at least ``min_rows[name]`` rows (default 1). The shift is the lowest of the
    sets' shifts, so the candidate flags no more of any counted set than the serving
    model does. Returns the shift, the set that set it, and per counted set its rows and
    false-positive rates (serving, candidate before and after the shift)."""
    first = next(iter(sets), None)
    shifts: dict[str, float] = {}
    for name, (served, cand) in sets.items():
        if len(served) and len(served) >= min_rows.get(name, 1):
            shifts[name] = _shift_for(cand, int((served >= 0).sum()), float(served.max()))
        elif len(served):
            log.info(
                "operating point: %d %s rows (< %d): not held on them",
                len(served),
                name,
                min_rows.get(name, 1),
            )
    if first not in shifts:
        return None
    shift = min(shifts.values())
    held: dict[str, Any] = {"shift": shift, "set_by": min(shifts, key=shifts.__getitem__)}
    for name in shifts:
        served, cand = sets[name]
        held[name] = {
            "rows": len(served),
            "serving_fpr": float((served >= 0).mean()),
            "candidate_fpr_before": float((cand >= 0).mean()),
            "candidate_fpr": float((cand + shift >= 0).mean()),
        }
    return held


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def _served_margins(
    guard: EncoderHeadGuard,
    heads: Heads,
    rows: Sequence[Example],
    policies: PolicyRegistry,
    config: ServiceConfig,
) -> tuple[np.ndarray, list[Example]]:
    """Per row, the served verdict's margin (see :func:`hold_operating_point`), and the
    rows the service takes (a row it rejects is left out)."""
    service = GuardService(guard, policies, config)
    kept, prepared = [], []
    for e in rows:
        item = RawItem(turns_to_json(e.turns), e.side.value.encode(), e.policy_id.encode())
        try:
            prepared.append(service.prepare(item))
        except InvalidInput:
            continue
        kept.append(e)
    inputs = [x for p in prepared for x in p.inputs]
    emb = guard.embed([x.ids for x in inputs])
    turn_bar, window_bar = _logit(guard.threshold), _logit(guard.window_threshold)
    margins = np.zeros(len(kept), np.float64)
    at = 0
    for i, (e, p) in enumerate(zip(kept, prepared, strict=True)):
        head = heads.prompt if e.side is Role.USER else heads.response
        logits = head(emb[at : at + len(p.inputs)])[:, 0]
        at += len(p.inputs)
        whole, parts = (logits[0], logits[1:]) if p.whole is not None else (None, logits)
        if whole is not None and not len(parts):
            margins[i] = whole - turn_bar
        elif whole is None:
            margins[i] = float(parts.max()) - turn_bar
        else:
            margins[i] = max(whole - turn_bar, float(parts.max()) - window_bar)
    return margins, kept


def _shift_for(margins: np.ndarray, allowed: int, serving_top: float) -> float:
    """The shift that flags the most rows without flagging more than ``allowed``."""
    values = np.unique(margins)[::-1]  # distinct, highest first
    if allowed <= 0 or not len(values):
        # None flagged: keep the serving model's distance below the bar (at least 0.1).
        gap = max(-serving_top, 0.1)
        return float(-(values[0] + gap)) if len(values) else 0.0
    best = -(values[0] + max(-serving_top, 0.1))  # flags nothing
    for j, v in enumerate(values):
        flagged = int((margins >= v).sum())
        if flagged > allowed:
            break
        below = values[j + 1] if j + 1 < len(values) else v - 1.0
        best = -(v + below) / 2
    return float(best)


def _shifted(dense: Dense, shift: float) -> Dense:
    """``dense`` with ``shift`` added to its output logit."""
    biases = list(dense.biases)
    biases[-1] = (biases[-1] + np.float32(shift)).astype(np.float32)
    return Dense(dense.weights, tuple(biases))
