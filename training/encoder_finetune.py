"""LoRA fine-tuning of the default model's sentence encoder (CPU, minutes).

A frozen encoder puts "kill a process" next to "kill a person": a linear head
on its embeddings cannot tell them apart. A small LoRA adapter (rank 8 on the
attention and feed-forward projections, ~340k parameters, ~1.3 MB) trained
with two throw-away linear heads (prompt, response) on the training split
moves such pairs apart; the served heads are then fitted on the adapted
embeddings as before (``training.default_model``).

Deterministic for a given machine: fixed seed, fixed batch order per epoch.
Training inputs are the served views cut to ``train_len`` tokens (head and
tail), which keeps an epoch at a few minutes on two cores.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from guard.encoder import SentenceEncoder, mean_pooled
from guard.scoring import length_batches
from training.encoder_head import Row, row_side, row_turns

ADAPTER_DIR = "adapter"


@dataclass(frozen=True)
class AdapterConfig:
    rank: int = 8
    epochs: int = 1
    lr: float = 5e-4
    head_lr: float = 1e-2
    batch: int = 32
    train_len: int = 96
    seed: int = 0
    target_modules: tuple[str, ...] = ("query", "key", "value", "dense")


def training_inputs(
    encoder: SentenceEncoder, rows: Sequence[Row], train_len: int
) -> list[list[int]]:
    """The served encoder inputs, cut to ``train_len`` tokens (CLS/SEP kept)."""
    out = []
    for r in rows:
        ids = encoder.view_ids(row_turns(r), row_side(r))
        if len(ids) > train_len:
            ids = [ids[0], *SentenceEncoder.head_tail(ids[1:-1], train_len - 2), ids[-1]]
        out.append(ids)
    return out


def finetune_adapter(
    encoder: SentenceEncoder,
    rows: Sequence[Row],
    weights: np.ndarray,
    out_dir: Path,
    cfg: AdapterConfig = AdapterConfig(),
    log: Callable[[str], None] = print,
) -> SentenceEncoder:
    """Train a LoRA adapter on ``rows`` (weighted BCE, one head per side), save it
    to ``out_dir`` and return the encoder with the adapter merged in.

    ``encoder.model`` is changed in place (PEFT injects the LoRA layers into it);
    use the returned encoder."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    inputs = training_inputs(encoder, rows, cfg.train_len)
    y = torch.tensor([r["label"] == "unsafe" for r in rows], dtype=torch.float32)
    is_agent = torch.tensor([row_side(r).value == "agent" for r in rows])
    w = torch.tensor(weights / weights.mean(), dtype=torch.float32)
    lora = LoraConfig(
        r=cfg.rank,
        lora_alpha=2 * cfg.rank,
        lora_dropout=0.1,
        target_modules=list(cfg.target_modules),
    )
    model = get_peft_model(encoder.model, lora)
    hidden_size = int(getattr(encoder.model, "config").hidden_size)  # noqa: B009
    heads = torch.nn.Linear(hidden_size, 2)
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": trainable, "lr": cfg.lr}, {"params": heads.parameters(), "lr": cfg.head_lr}],
        weight_decay=0.01,
    )
    batches = list(length_batches([len(x) for x in inputs], cfg.batch, cfg.batch * cfg.train_len))
    steps = len(batches) * cfg.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[cfg.lr, cfg.head_lr], total_steps=steps, pct_start=0.1
    )
    model.train()
    start, step = time.monotonic(), 0
    for _ in range(cfg.epochs):
        rng.shuffle(batches)
        for b in batches:
            pooled = mean_pooled(model, [inputs[i] for i in b], encoder.pad_id)
            logits = heads(pooled * 10.0)  # unit-norm embeddings: scale for the heads
            idx = torch.tensor(b)
            side_logit = torch.where(is_agent[idx], logits[:, 1], logits[:, 0])
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                side_logit, y[idx], weight=w[idx]
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 20 == 0 or step == steps:
                log(
                    f"adapter step {step}/{steps} loss {loss.item():.3f} "
                    f"({time.monotonic() - start:.0f} s)"
                )
    model.save_pretrained(str(out_dir))
    merged = model.merge_and_unload().eval()
    return SentenceEncoder(merged, encoder.tok, encoder.view)
