"""The default model's manifest (``guardstream-model.json``): what the loader needs
(kind, encoder, view, adapter, heads, threshold) and how the model was made."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from guard.encoder import HEADS_FILE, KIND
from guard.taxonomy import LLAMA_GUARD_1
from training.encoder_finetune import ADAPTER_DIR, AdapterConfig
from training.encoder_head import Row
from training.public_data import catalogue, splits


def manifest_for(
    threshold: float,
    choices: Mapping[str, Any],
    training_splits: Mapping[str, Sequence[Row]],
    adapter_from: Path | None,
    *,
    encoder_package: str,
    encoder_name: str,
    view: Any,
    adapter: AdapterConfig,
    with_candidates: bool = False,
) -> dict[str, Any]:
    """The manifest of a model built by the recipe (its metrics are added after evaluation)."""
    return {
        "kind": KIND,
        "name": "guardstream-default-minilm-heads",
        "version": "1",
        "encoder": {"package": encoder_package, "model": encoder_name, "pooling": "mean+l2"},
        "view": {
            "max_length": view.max_length,
            "context_tokens": view.context_tokens,
            "response_view": view.response_view,
        },
        "adapter": ADAPTER_DIR,
        "adapter_config": asdict(adapter),
        "heads": HEADS_FILE,
        "head_type": "logistic regression per side (prompt, response) + one per LG1 code",
        "policy_id": LLAMA_GUARD_1.id,
        "codes": list(LLAMA_GUARD_1.codes),
        "threshold": threshold,
        "category_threshold": 0.5,
        "training": {
            "sources": {
                s: catalogue.SOURCE_INFO[s].license
                for s in (
                    *sorted({r["source"] for rows in training_splits.values() for r in rows}),
                    *catalogue.PAIR_SOURCES,
                )
            },
            "heldout_sources": list(catalogue.HELDOUT_SOURCES),
            "counts": {k: splits.summarize(v) for k, v in training_splits.items()},
            "choices": choices,
            "adapter": "trained" if adapter_from is None else f"copied from {adapter_from}",
            "recipe": "python -m training.default_model --out models/default"
            + (" --with-candidates" if with_candidates else ""),
        },
    }
