"""Causal-LM fine-tuning of a guard model, loss on the answer tokens only.

Full fine-tuning or LoRA (peft); CPU here for small models, GPU in production
(bf16). Resumable: ``out_dir/state.pt`` holds weights, optimizer and step, and
a rerun with the same arguments continues from it. Progress shows as a bar;
metrics go to ``out_dir/train_log.jsonl``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from guard.causal_lm import pick_device
from guard.families import write_format
from guard.prompt import PromptFormat
from guard.taxonomy import PolicyRegistry
from training.dataset import Example
from training.formatting import NONE, Augmentations, format_example

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FinetuneConfig:
    prompt_format: PromptFormat = PromptFormat.LG1
    epochs: float = 2.0
    max_steps: int | None = None
    batch_size: int = 8
    learning_rate: float = 2e-5
    lora: bool = False
    lora_rank: int = 8
    augmentations: Augmentations = NONE
    seed: int = 0
    max_length: int = 4096
    save_every: int = 50
    #: Dtype of the computation and of the frozen weights: "bf16" or "fp32"; None: bf16
    #: on a GPU, fp32 on the CPU. Trained weights are always kept in fp32 (master
    #: weights): bf16 weights under AdamW lose most small updates to rounding.
    compute_dtype: str | None = None
    #: Recompute activations in the backward pass (less memory, ~30% more time); None:
    #: on a GPU.
    gradient_checkpointing: bool | None = None


def precision(cfg: FinetuneConfig, device: torch.device) -> torch.dtype:
    """The compute dtype of a run (see :attr:`FinetuneConfig.compute_dtype`)."""
    name = cfg.compute_dtype or ("bf16" if device.type == "cuda" else "fp32")
    if name not in ("bf16", "fp32"):
        raise ValueError(f"compute_dtype must be bf16 or fp32, got {name!r}")
    return torch.bfloat16 if name == "bf16" else torch.float32


def tokenize_example(
    tok: object, prompt: str, answer: str, max_length: int
) -> tuple[list[int], list[int]]:
    """(input ids, labels): the labels are -100 on the prompt, the answer + EOS after it."""
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []  # type: ignore[attr-defined]
    prompt_ids = tok(prompt, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    full = tok(prompt + answer, add_special_tokens=False)["input_ids"]  # type: ignore[operator]
    if full[: len(prompt_ids)] != prompt_ids:
        raise ValueError("the answer merges with the prompt's last token")
    answer_ids = [*full[len(prompt_ids) :], tok.eos_token_id]  # type: ignore[attr-defined]
    ids = bos + prompt_ids + answer_ids
    labels = [-100] * (len(bos) + len(prompt_ids)) + answer_ids
    if len(ids) > max_length:  # keep the answer; cut the prompt's start
        ids, labels = ids[-max_length:], labels[-max_length:]
    return ids, labels


def answer_batch(
    items: Sequence[tuple[list[int], list[int]]], pad: int, device: torch.device
) -> dict[str, Any]:
    """Left-padded batch: every row's answer ends at the last position.

    Only the last ``k`` positions (the longest answer + 1) go through the
    output head, which is most of the cost with a 128k vocabulary.
    """
    width = max(len(i) for i, _ in items)
    k = max(sum(1 for x in lab if x != -100) for _, lab in items)
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    for row, (i, lab) in enumerate(items):
        ids[row, width - len(i) :] = torch.tensor(i)
        labels[row, width - len(lab) :] = torch.tensor(lab)
        mask[row, width - len(i) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "position_ids": positions.to(device),
        "labels": labels[:, -k:].to(device),
        "k": k,
    }


def answer_loss(model: Any, batch: dict[str, Any]) -> torch.Tensor:
    """Cross-entropy of the answer tokens only."""
    k = batch["k"]
    logits = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=k + 1,
    ).logits
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]),
        batch["labels"].reshape(-1),
        ignore_index=-100,
    )


def finetune(
    base: Path,
    examples: Sequence[Example],
    policies: PolicyRegistry,
    out_dir: Path,
    cfg: FinetuneConfig,
) -> Path:
    """Fine-tune ``base`` on ``examples``; the merged checkpoint lands in ``out_dir/model``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not examples:
        raise ValueError("no training examples")
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device()
    torch.manual_seed(cfg.seed)
    tok = AutoTokenizer.from_pretrained(str(base))
    compute = precision(cfg, device)
    # LoRA: the frozen base in the compute dtype, the adapters in fp32. A full
    # fine-tune: every weight in fp32 (master weights), the forward pass autocast.
    model: Any = AutoModelForCausalLM.from_pretrained(
        str(base), dtype=compute if cfg.lora else torch.float32
    )
    model.to(device)  # type: ignore[arg-type]
    checkpointing = (
        cfg.gradient_checkpointing
        if cfg.gradient_checkpointing is not None
        else device.type == "cuda"
    )
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if cfg.lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(
                r=cfg.lora_rank,
                lora_alpha=2 * cfg.lora_rank,
                target_modules="all-linear",
                task_type="CAUSAL_LM",
            ),
        )
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    specials = tuple(tok.all_special_tokens)
    steps_per_epoch = max(1, -(-len(examples) // cfg.batch_size))
    total = int(cfg.epochs * steps_per_epoch)
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.0)
    state_path, step = out_dir / "state.pt", 0
    # What a saved state is only valid for: another base or recipe starts over.
    fingerprint = json.dumps(
        [
            str(base),
            cfg.lora,
            cfg.lora_rank,
            str(compute),
            cfg.learning_rate,
            cfg.batch_size,
            cfg.seed,
            str(cfg.prompt_format),
            len(examples),
        ]
    )
    if state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=False)
        if state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["trainable"], strict=False)
            optim.load_state_dict(state["optim"])
            step = int(state["step"])
            log.info("resuming fine-tuning at step %d/%d", step, total)
        else:
            log.warning("%s belongs to another run: starting over", state_path)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.train()
    with (
        open(out_dir / "train_log.jsonl", "a") as logf,
        tqdm(total=total, initial=step, desc="fine-tune", unit="step") as bar,
    ):
        while step < total:
            epoch, offset = divmod(step, steps_per_epoch)
            order = list(range(len(examples)))
            random.Random(cfg.seed * 1000 + epoch).shuffle(order)
            idx = order[offset * cfg.batch_size : (offset + 1) * cfg.batch_size]
            items = []
            for i in idx:
                ex = examples[i]
                rng = random.Random(zlib.crc32(f"{cfg.seed}:{epoch}:{ex.id}".encode()))
                f = format_example(
                    ex,
                    policies.get(ex.policy_id),
                    cfg.prompt_format,
                    cfg.augmentations,
                    rng,
                    specials,
                )
                items.append(tokenize_example(tok, f.prompt, f.answer, cfg.max_length))
            with torch.autocast(device.type, dtype=compute, enabled=compute != torch.float32):
                loss = answer_loss(model, answer_batch(items, pad, device))
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            logf.write(json.dumps({"step": step, "epoch": epoch, "loss": loss.item()}) + "\n")
            if step % cfg.save_every == 0 and step < total:
                # Only what training changes (a LoRA run: the adapters, not the 16 GB
                # base), written whole or not at all: a kill mid-save keeps the last one.
                trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
                tmp = state_path.with_suffix(".tmp")
                torch.save(
                    {
                        "trainable": trainable,
                        "optim": optim.state_dict(),
                        "step": step,
                        "fingerprint": fingerprint,
                    },
                    tmp,
                )
                os.replace(tmp, state_path)
    if cfg.lora:
        model = model.merge_and_unload()
    model.eval()
    model.to(compute)  # served in the compute dtype (bf16 on a GPU)
    final = out_dir / "model"
    model.save_pretrained(str(final))
    tok.save_pretrained(str(final))
    write_format(final, cfg.prompt_format)
    state_path.unlink(missing_ok=True)
    return final
