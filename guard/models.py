"""Loading a guard model from a checkpoint directory, whatever its kind.

* a Hugging Face causal-LM directory (Llama Guard 1/2/3, or one fine-tuned by
  ``training/``): :class:`guard.scoring.CausalLMGuard`;
* a directory with a ``guardstream-model.json`` manifest naming another kind
  (see ``MODEL_KINDS``), e.g. ``encoder-head`` (:mod:`guard.encoder`, the
  shipped ``models/default``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from guard.scoring import CausalLMGuard, Guard, ScorerConfig

MANIFEST = "guardstream-model.json"


def _load_encoder_head(path: Path, cfg: ScorerConfig) -> Guard:
    from guard.encoder import EncoderHeadGuard  # lazy: only this kind needs it

    return EncoderHeadGuard.load(path, cfg)


#: kind -> loader(checkpoint_dir, scorer_config); extended by other model kinds.
MODEL_KINDS: dict[str, Callable[[Path, ScorerConfig], Guard]] = {
    "causal-lm": lambda path, cfg: CausalLMGuard.load(path, cfg),
    "encoder-head": _load_encoder_head,
}


def read_manifest(checkpoint: Path) -> dict[str, object]:
    path = checkpoint / MANIFEST
    if not path.exists():
        return {"kind": "causal-lm"}
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "kind" not in data:
        raise ValueError(f"{path}: needs a 'kind'")
    return data


def load_guard(checkpoint: Path | str, config: ScorerConfig | None = None) -> Guard:
    checkpoint = Path(checkpoint)
    kind = str(read_manifest(checkpoint)["kind"])
    try:
        loader = MODEL_KINDS[kind]
    except KeyError:
        raise ValueError(
            f"{checkpoint}: unknown model kind {kind!r} (known: {', '.join(sorted(MODEL_KINDS))})"
        ) from None
    return loader(checkpoint, config or ScorerConfig())
