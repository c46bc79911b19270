"""Which guard checkpoint a local run serves, and building it when missing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from guard.protocol import CHECKPOINT_ENV
from guard.settings import Settings
from stream_app.launchers.process import ManagedProcess


@dataclass(frozen=True)
class LocalModel:
    checkpoint: Path
    description: str


def placeholder_checkpoint(data_dir: Path) -> Path:
    """A tiny random LG1 model with the Llama 3 tokenizer (built once, ~30 s)."""
    from guard.checkpoints import build_tiny_llama, save_llama3_tokenizer
    from guard.prompt import PromptFormat

    out = data_dir / "models" / "placeholder-tiny-random"
    if not (out / "config.json").exists():
        tok = save_llama3_tokenizer(data_dir / "models" / "llama3-tokenizer")
        build_tiny_llama(out, tok, answer_only_head=PromptFormat.LG1)
    return out


#: The model shipped in the repository (``guardstream train-default`` rebuilds it).
SHIPPED_MODEL = Path(__file__).resolve().parents[2] / "models" / "default"


def resolve_local_model(data_dir: Path) -> LocalModel:
    """``$GUARDSTREAM_MODEL_CHECKPOINT`` if set, else the shipped default model
    (``models/default``), else the untrained placeholder."""
    env = os.environ.get(CHECKPOINT_ENV)
    if env:
        return LocalModel(Path(env), f"checkpoint {env} (from ${CHECKPOINT_ENV})")
    if (SHIPPED_MODEL / "guardstream-model.json").is_file():
        return LocalModel(
            SHIPPED_MODEL,
            "shipped default model (MiniLM + LoRA adapter + heads, CPU; see docs/model-card.md)",
        )
    return LocalModel(
        placeholder_checkpoint(data_dir),
        "PLACEHOLDER: tiny random-weight model, not trained (verdicts are meaningless)",
    )


def local_triton(s: Settings, model: LocalModel, timeout_s: float = 300.0) -> ManagedProcess:
    """The local tritonserver on ``s.local``'s ports, serving ``model``."""
    from stream_app.launchers.tritonserver import TritonPorts, triton_process

    return triton_process(
        s.local.model_repository,
        s.local.data_dir / "triton",
        TritonPorts(
            s.local.triton_http_port, s.local.triton_grpc_port, s.local.triton_metrics_port
        ),
        explicit_models=[s.triton.model_name],
        env={CHECKPOINT_ENV: str(model.checkpoint.resolve())},
        timeout_s=timeout_s,
    )
