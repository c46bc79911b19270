"""Evaluation of a guard model on labelled examples (in-process or through Triton).

Precision, recall and FPR are those of the model's own verdicts (at the
threshold it serves with); AUPRC ranks its scores.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guard.conversation import turns_to_json
from guard.protocol import Classification, ClassifyRequest, ItemAnswer, RawItem
from guard.scoring import Guard, ScorerConfig
from guard.serving import GuardService, ServiceConfig
from guard.settings import Settings, TritonSettings
from guard.taxonomy import PolicyRegistry
from training.dataset import Example, read_rows
from training.gate import paired_flips
from training.metrics import SOURCE_KEYS, binary_report, per_category_auprc


def report_from_scores(
    examples: Sequence[Example],
    scores: Sequence[float],
    predicted: Sequence[bool],
    seconds: float | None = None,
) -> dict[str, Any]:
    labels = [e.unsafe for e in examples]
    report = binary_report(labels, scores, predicted)
    report["per_category"] = per_category_auprc(labels, [e.categories for e in examples], scores)
    report["category_rows"] = {
        code: sum(code in e.categories for e in examples) for code in report["per_category"]
    }

    def subset(idx: list[int], keys: Sequence[str]) -> dict[str, Any]:
        sub = binary_report(
            [labels[i] for i in idx], [scores[i] for i in idx], [predicted[i] for i in idx]
        )
        return {k: sub[k] for k in keys}

    for side in ("user", "agent"):
        idx = [i for i, e in enumerate(examples) if e.side.value == side]
        if idx:
            report[f"{side}_side"] = subset(idx, ("n", "positives", "auprc", "recall", "f1", "fpr"))
    sources = sorted({e.source for e in examples})
    if len(sources) > 1:
        report["per_source"] = {
            src: subset([i for i, e in enumerate(examples) if e.source == src], SOURCE_KEYS)
            for src in sources
        }
    if seconds:
        report["turns_per_s"] = len(examples) / seconds
    return report


@dataclass(frozen=True, slots=True)
class Scored:
    """Examples as the served model judged them: the scored ones with their answers,
    the rejected ones with the reason, and the seconds it took."""

    examples: list[Example]
    answers: list[ItemAnswer]
    rejected: list[dict[str, str]]
    seconds: float

    def report(self) -> dict[str, Any]:
        report = report_from_scores(
            self.examples,
            [a.p_unsafe for a in self.answers],
            [a.unsafe for a in self.answers],
            self.seconds,
        )
        report["rejected"] = self.rejected
        return report


def score_in_process(
    guard: Guard[Any],
    examples: Sequence[Example],
    policies: PolicyRegistry,
    config: ServiceConfig | None = None,
    batch: int = 64,
) -> Scored:
    """Score ``examples`` as the served model does (:class:`guard.serving.GuardService`:
    a turn longer than the model's view is also judged in windows; ``config``: the
    served model's window size, size limit and default policy, else the defaults).

    A row the service rejects (over its size limit) is left out and listed under
    ``rejected``."""
    config = config or ServiceConfig(Path("."), ScorerConfig(), canary=False)
    service = GuardService(guard, policies, config)
    start = time.perf_counter()
    answers: list[ItemAnswer | str] = []
    for i in range(0, len(examples), batch):
        requests = [
            [RawItem(turns_to_json(e.turns), e.side.value.encode(), e.policy_id.encode())]
            for e in examples[i : i + batch]
        ]
        answers += [a if isinstance(a, str) else a[0] for a in service.handle(requests)]
    seconds = time.perf_counter() - start
    pairs = list(zip(examples, answers, strict=True))
    return Scored(
        [e for e, a in pairs if not isinstance(a, str)],
        [a for _, a in pairs if not isinstance(a, str)],
        [{"ref": e.id, "reason": a} for e, a in pairs if isinstance(a, str)],
        seconds,
    )


def evaluate_in_process(
    guard: Guard[Any],
    examples: Sequence[Example],
    policies: PolicyRegistry,
    config: ServiceConfig | None = None,
    batch: int = 64,
) -> dict[str, Any]:
    """The report of :func:`score_in_process`."""
    return score_in_process(guard, examples, policies, config, batch).report()


def compare_in_process(
    candidate: Guard[Any],
    serving: Guard[Any],
    examples: Sequence[Example],
    policies: PolicyRegistry,
    config: ServiceConfig | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both models' reports on the rows both scored; the candidate's also has, per side,
    the rows whose verdict flipped (``vs_serving``, :func:`training.gate.paired_flips`)."""
    c = score_in_process(candidate, examples, policies, config)
    s = score_in_process(serving, examples, policies, config)
    if [e.id for e in c.examples] != [e.id for e in s.examples]:  # not with one config
        both = {e.id for e in c.examples} & {e.id for e in s.examples}
        c, s = (
            Scored(
                [e for e in x.examples if e.id in both],
                [a for e, a in zip(x.examples, x.answers, strict=True) if e.id in both],
                x.rejected,
                x.seconds,
            )
            for x in (c, s)
        )
    cand, serv = c.report(), s.report()
    cand["vs_serving"] = paired_flips(
        [e.unsafe for e in c.examples],
        [e.side.value for e in c.examples],
        [a.unsafe for a in c.answers],
        [a.unsafe for a in s.answers],
    )
    return cand, serv


async def classify_through_triton(
    settings: TritonSettings,
    examples: Sequence[Example],
    concurrency: int = 16,
    progress: bool = True,
) -> tuple[list[Classification | Exception], float]:
    """Each example classified through the production path (the Triton model), in
    order, with the seconds it took; a row the model rejects gets its
    :class:`guard.protocol.RequestRejected`."""
    from tqdm import tqdm

    from stream_app.triton_client import GuardClient

    requests = [ClassifyRequest(e.turns, e.side, e.policy_id) for e in examples]
    async with GuardClient(settings) as client:
        await client.wait_ready()
        with tqdm(total=len(examples), desc="eval", unit="turn", disable=not progress) as bar:
            start = time.perf_counter()
            results = await client.classify_many(
                requests, concurrency, on_done=lambda: bar.update(1)
            )
            seconds = time.perf_counter() - start
    return list(results), seconds


def run_eval(
    data: Path, settings: Settings, report_path: Path | None = None, concurrency: int = 16
) -> dict[str, Any]:
    """``guardstream eval``: score a labelled JSONL file through Triton and report."""
    policies = PolicyRegistry.with_directory(settings.policy.policy_dir)
    examples, unreadable = read_rows(data, policies)
    results, seconds = asyncio.run(classify_through_triton(settings.triton, examples, concurrency))
    scored = [
        (e, r.answer)
        for e, r in zip(examples, results, strict=True)
        if isinstance(r, Classification)
    ]
    rejected = [
        {"ref": e.id, "reason": str(r)}
        for e, r in zip(examples, results, strict=True)
        if not isinstance(r, Classification)
    ]
    report = report_from_scores(
        [e for e, _ in scored], [a.p_unsafe for _, a in scored], [a.unsafe for _, a in scored]
    )
    report["turns_per_s"] = len(examples) / seconds if seconds else 0.0
    report["unreadable"] = [{"ref": r.ref, "reason": r.reason} for r in unreadable] + rejected
    report["n_unreadable"] = len(report["unreadable"])
    report["data"] = str(data)
    if report_path is not None:
        report_path.write_text(json.dumps(report, indent=2))
    return report
