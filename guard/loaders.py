"""The loader registry: a checkpoint directory -> the guard model of its kind.

* a Hugging Face causal-LM directory (Llama Guard 1/2/3, or one fine-tuned by
  ``training/``): :class:`guard.causal_lm.CausalLMGuard`;
* a directory with a ``guardstream-model.json`` manifest naming another kind
  (see ``MODEL_KINDS``), e.g. ``encoder-head`` (:mod:`guard.encoder`, the
  shipped ``models/default``).

Loaders import their model code lazily: only the kind in use is imported.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guard.scoring import Guard, ScorerConfig

MANIFEST = "guardstream-model.json"


def _load_causal_lm(path: Path, cfg: ScorerConfig, device: str | None) -> Guard[Any]:
    import torch

    from guard.causal_lm import CausalLMGuard

    return CausalLMGuard.load(path, cfg, torch.device(device) if device else None)


def _load_encoder_head(path: Path, cfg: ScorerConfig, device: str | None) -> Guard[Any]:
    from guard.encoder import EncoderHeadGuard

    return EncoderHeadGuard.load(path, cfg, device)


#: kind -> loader(checkpoint_dir, scorer_config, device); extended by other model kinds.
MODEL_KINDS: dict[str, Callable[[Path, ScorerConfig, str | None], Guard[Any]]] = {
    "causal-lm": _load_causal_lm,
    "encoder-head": _load_encoder_head,
}


def read_manifest(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's manifest; a directory without one is a causal LM."""
    path = checkpoint / MANIFEST
    if not path.exists():
        return {"kind": "causal-lm"}
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError(f"{path}: needs a 'kind'")
    return data


def load_guard(
    checkpoint: Path | str, config: ScorerConfig | None = None, device: str | None = None
) -> Guard[Any]:
    """The guard in ``checkpoint``, on ``device`` (a torch device such as ``cuda:1``;
    None: a causal LM on the first GPU if there is one, the encoder guard on the CPU)."""
    checkpoint = Path(checkpoint)
    kind = str(read_manifest(checkpoint)["kind"])
    try:
        loader = MODEL_KINDS[kind]
    except KeyError:
        raise ValueError(
            f"{checkpoint}: unknown model kind {kind!r} (known: {', '.join(sorted(MODEL_KINDS))})"
        ) from None
    return loader(checkpoint, config or ScorerConfig(), device)
