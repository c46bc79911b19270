"""Evaluation of a guard model on labelled examples (in-process or through Triton)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guard.scoring import Guard, GuardRequest
from guard.settings import Settings, TritonSettings
from guard.taxonomy import PolicyRegistry
from training.dataset import Example, read_rows
from training.metrics import binary_report, per_category_auprc


def report_from_scores(
    examples: Sequence[Example],
    scores: Sequence[float],
    threshold: float,
    seconds: float | None = None,
) -> dict[str, Any]:
    labels = [e.unsafe for e in examples]
    report = binary_report(labels, scores, threshold)
    report["per_category"] = per_category_auprc(labels, [e.categories for e in examples], scores)
    for side in ("user", "agent"):
        idx = [i for i, e in enumerate(examples) if e.side.value == side]
        if idx:
            sub = binary_report([labels[i] for i in idx], [scores[i] for i in idx], threshold)
            report[f"{side}_side"] = {k: sub[k] for k in ("n", "auprc", "f1", "fpr")}
    if seconds:
        report["turns_per_s"] = len(examples) / seconds
    return report


def evaluate_in_process(
    guard: Guard,
    examples: Sequence[Example],
    policies: PolicyRegistry,
    threshold: float,
    batch: int = 64,
) -> dict[str, Any]:
    start = time.perf_counter()
    scores: list[float] = []
    for i in range(0, len(examples), batch):
        reqs = [
            GuardRequest(e.turns, e.side, policies.get(e.policy_id))
            for e in examples[i : i + batch]
        ]
        scores += [r.p_unsafe for r in guard.score(reqs)]
    return report_from_scores(examples, scores, threshold, time.perf_counter() - start)


async def score_through_triton(
    settings: TritonSettings,
    examples: Sequence[Example],
    concurrency: int = 16,
    progress: bool = True,
) -> tuple[list[float | None], list[str], float]:
    """p_unsafe per example through the production path (the Triton model).

    Returns (scores, errors, seconds): a row the model rejects gets ``None`` and
    its reason in ``errors`` (same index).
    """
    from tqdm import tqdm

    from stream_app.triton_client import ClassifyRequest, GuardClient, RequestRejected

    async with GuardClient(settings) as client:
        await client.wait_ready()
        sem = asyncio.Semaphore(concurrency)
        bar = tqdm(total=len(examples), desc="eval", unit="turn", disable=not progress)
        scores: list[float | None] = [None] * len(examples)
        errors = [""] * len(examples)

        async def one(i: int, e: Example) -> None:
            async with sem:
                try:
                    r = await client.classify(ClassifyRequest(e.turns, e.side, e.policy_id))
                    scores[i] = r.p_unsafe
                except RequestRejected as exc:
                    errors[i] = str(exc)
                bar.update(1)

        start = time.perf_counter()
        await asyncio.gather(*(one(i, e) for i, e in enumerate(examples)))
        seconds = time.perf_counter() - start
        bar.close()
    return scores, errors, seconds


def run_eval(
    data: Path, settings: Settings, report_path: Path | None = None, concurrency: int = 16
) -> dict[str, Any]:
    """``guardstream eval``: score a labelled JSONL file through Triton and report."""
    policies = PolicyRegistry.with_directory(settings.policy.policy_dir)
    examples, unreadable = read_rows(data, policies)
    scores, errors, seconds = asyncio.run(
        score_through_triton(settings.triton, examples, concurrency)
    )
    scored = [(e, s) for e, s in zip(examples, scores, strict=True) if s is not None]
    rejected = [
        {"ref": e.id, "reason": err} for e, err in zip(examples, errors, strict=True) if err
    ]
    report = report_from_scores(
        [e for e, _ in scored], [s for _, s in scored], settings.policy.threshold, seconds
    )
    report["turns_per_s"] = len(examples) / seconds if seconds else 0.0
    report["unreadable"] = [{"ref": r.ref, "reason": r.reason} for r in unreadable] + rejected
    report["n_unreadable"] = len(report["unreadable"])
    report["data"] = str(data)
    if report_path is not None:
        report_path.write_text(json.dumps(report, indent=2))
    return report
