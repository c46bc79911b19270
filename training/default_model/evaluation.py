"""Held-out evaluation of a loaded guard: AUPRC per side and source, FPR on the
hard negatives, category heads, hh-rlhf pair ranking, in-process throughput."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from guard.scoring import Guard, GuardRequest, GuardResult
from guard.taxonomy import LLAMA_GUARD_1
from training.encoder_head import Row, row_side, row_turns
from training.metrics import auprc
from training.public_data import catalogue
from training.public_data.catalogue import stable_fraction

THROUGHPUT_TURNS = 256


def labels_of(rows: Sequence[Row]) -> np.ndarray:
    return np.array([r["label"] == "unsafe" for r in rows])


def auprc4(
    labels: Sequence[bool] | np.ndarray, scores: Sequence[float] | np.ndarray
) -> float | None:
    """:func:`training.metrics.auprc` rounded to 4 places, as the manifest reports it."""
    value = auprc(labels, scores)
    return None if value is None else round(value, 4)


def pair_rows(pairs: Sequence[dict[str, Any]]) -> list[Row]:
    """Each pair's ``chosen`` then ``rejected`` conversation, as rows to score."""
    return [{"conversation": p[k]} for p in pairs for k in ("chosen", "rejected")]


def requests_of(rows: Sequence[Row]) -> list[GuardRequest]:
    return [GuardRequest(row_turns(r), row_side(r), LLAMA_GUARD_1) for r in rows]


def score_rows(guard: Guard[Any], rows: Sequence[Row], chunk: int = 512) -> list[GuardResult]:
    out: list[GuardResult] = []
    for i in range(0, len(rows), chunk):
        out.extend(guard.score(requests_of(rows[i : i + chunk])))
    return out


def evaluate(
    guard: Guard[Any], heldout: Sequence[Row], pairs: Sequence[dict[str, Any]], threshold: float
) -> dict[str, Any]:
    """Held-out metrics of a loaded guard (scored through ``Guard.score``)."""
    results = score_rows(guard, heldout)
    p = np.array([r.p_unsafe for r in results])
    y = labels_of(heldout)
    src = np.array([r["source"] for r in heldout])
    side = np.array([r["conversation"][-1]["role"] for r in heldout])
    out: dict[str, Any] = {}
    prompt, response = side == "user", side == "agent"
    real = np.isin(src, catalogue.REAL_TRAFFIC_SOURCES)
    # The prompt AUPRC keeps its definition (written requests against everyday
    # instructions and hard negatives); real traffic is reported apart, and all together.
    out["prompt_auprc"] = auprc4(y[prompt & ~real], p[prompt & ~real])
    out["real_traffic_prompt_auprc"] = auprc4(y[prompt & real], p[prompt & real])
    out["all_prompts_auprc"] = auprc4(y[prompt], p[prompt])
    out["response_auprc"] = auprc4(y[response], p[response])
    by_source: dict[str, Any] = {}
    for s in sorted(set(src)):
        m = src == s
        row: dict[str, Any] = {"n": int(m.sum()), "unsafe": int(y[m].sum())}
        for kind, sm in (("prompt", m & prompt), ("response", m & response)):
            if sm.any():
                row[f"{kind}_auprc"] = auprc4(y[sm], p[sm])
                if y[sm].any():
                    row[f"{kind}_recall"] = round(float((p[sm & y] >= threshold).mean()), 4)
                if (~y[sm]).any():
                    row[f"{kind}_fpr"] = round(float((p[sm & ~y] >= threshold).mean()), 4)
        by_source[s] = row
    out["by_source"] = by_source
    # Prompt AUPRC without the (non-commercial, eval-only) alpaca negatives.
    no_alpaca = prompt & ~real & (src != "alpaca_harmless")
    out["prompt_auprc_without_alpaca"] = auprc4(y[no_alpaca], p[no_alpaca])
    benign = src == "guardstream_benign"
    fpr = float((p[benign] >= threshold).mean()) if benign.any() else None
    out["benign_hard_negative_fpr"] = None if fpr is None else round(fpr, 4)
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
    guard: Guard[Any], rows: Sequence[Row], results: Sequence[GuardResult]
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
        out[code] = {"n": int(sum(labels)), "auprc": auprc4(labels, probs[:, j])}
    flagged = [i for i in idx if results[i].unsafe]
    hit = sum(bool(set(results[i].codes) & set(rows[i]["categories"])) for i in flagged)
    out["flagged_with_a_true_code"] = round(hit / len(flagged), 4) if flagged else None
    return out


def category_probs(guard: Guard[Any], rows: Sequence[Row]) -> np.ndarray:
    """[N, 6] category-head probabilities (encoder-head guards only)."""
    from guard.encoder import EncoderHeadGuard, sigmoid

    assert isinstance(guard, EncoderHeadGuard)
    prepared = [guard.prepare(r) for r in requests_of(rows)]
    emb = guard.embed([p.ids for p in prepared])
    return sigmoid(guard.heads.categories(emb))


def pair_accuracy(guard: Guard[Any], pairs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """How often the more harmful (``rejected``) answer scores above the ``chosen`` one."""
    scores = np.array([r.p_unsafe for r in score_rows(guard, pair_rows(pairs))]).reshape(-1, 2)
    return {
        "n": len(pairs),
        "rejected_scores_higher": round(float((scores[:, 1] > scores[:, 0]).mean()), 4),
        "ties": round(float((scores[:, 1] == scores[:, 0]).mean()), 4),
    }


def throughput(guard: Guard[Any], rows: Sequence[Row], n: int = THROUGHPUT_TURNS) -> dict[str, Any]:
    """In-process turns/s of ``Guard.score`` on ``n`` held-out turns (a fixed mix)."""
    import torch

    sample = sorted(rows, key=lambda r: stable_fraction("tput:" + r["id"]))[:n]
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
