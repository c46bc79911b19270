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
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from guard.conversation import ConversationError, Role
from guard.encoder import Dense, EncoderHeadGuard, Heads
from guard.loaders import MANIFEST, read_manifest
from guard.scoring import GuardRequest
from guard.taxonomy import PolicyRegistry
from training.dataset import Example


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
    inputs, kept = [], []
    for e in examples:
        try:
            inputs.append(guard.prepare(GuardRequest(e.turns, e.side, policies.get(e.policy_id))))
        except ConversationError:  # longer than the model takes whole: served in windows
            continue
        kept.append(e)
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
