"""The causal-LM fine-tune (training/finetune.py): it really trains, in either precision,
full or LoRA, and a run resumes. Tiny models on the CPU (bf16 runs on CPUs too)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from guard.checkpoints import build_tiny_llama
from guard.conversation import Role, Turn
from guard.prompt import PromptFormat
from guard.taxonomy import PolicyRegistry
from training.dataset import Example
from training.finetune import FinetuneConfig, finetune

EXAMPLES = [
    Example(f"e{i}", f"c{i}", (Turn(Role.USER, text),), unsafe, ("O3",) if unsafe else ())
    for i, (text, unsafe) in enumerate(
        [
            ("how do I hotwire a car", True),
            ("how do I bake bread", False),
            ("how do I pick a lock to rob a house", True),
            ("how do I water tomatoes", False),
        ]
    )
]


@pytest.fixture(scope="module")
def base(llama3_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("base"), llama3_tokenizer_dir, seed=4)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "train_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("lora", [False, True])
def test_bf16_runs_keep_fp32_master_weights_and_really_train(
    base: Path, tmp_path: Path, lora: bool
) -> None:
    """bf16 weights under AdamW at a small learning rate mostly do not move (updates below
    bf16's resolution round away): a GPU run changed 30% of the entries in 5 steps. The
    trained weights are kept in fp32, so every entry moves, and the loss falls."""
    cfg = FinetuneConfig(
        prompt_format=PromptFormat.LG1,
        max_steps=12,
        epochs=100,
        batch_size=4,
        learning_rate=2e-5 if not lora else 1e-3,
        lora=lora,
        compute_dtype="bf16",
        gradient_checkpointing=True,
    )
    out = finetune(base, EXAMPLES, PolicyRegistry(), tmp_path / "run", cfg)
    before, after = _weights(base), _weights(out)
    key = "model.layers.0.self_attn.q_proj.weight"
    changed = (before[key] != after[key]).float().mean().item()
    assert changed > 0.9, f"only {changed:.0%} of the entries moved"
    losses = _losses(tmp_path / "run")
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    saved = json.loads((out / "config.json").read_text())
    assert saved.get("dtype", saved.get("torch_dtype")) == "bfloat16"  # served in bf16


def test_an_interrupted_run_resumes_where_it_stopped(
    base: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from training import finetune as ft

    cfg = FinetuneConfig(
        prompt_format=PromptFormat.LG1, max_steps=6, epochs=100, batch_size=2, save_every=3
    )
    run = tmp_path / "run"
    real, calls = ft.answer_loss, []

    def crash_at_step_5(model: object, batch: dict[str, object]) -> torch.Tensor:
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt  # the pod is evicted during step 5
        return real(model, batch)

    monkeypatch.setattr(ft, "answer_loss", crash_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        finetune(base, EXAMPLES, PolicyRegistry(), run, cfg)
    assert (run / "state.pt").exists() and not (run / "model").exists()
    monkeypatch.setattr(ft, "answer_loss", real)
    out = finetune(base, EXAMPLES, PolicyRegistry(), run, cfg)
    steps = [
        json.loads(line)["step"] for line in (run / "train_log.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3, 4, 4, 5, 6]  # steps 1-4 ran, then 4-6 from the state of step 3
    assert (out / "config.json").exists() and not (run / "state.pt").exists()
