"""The review loop, end to end on the local stack: does it make the model better?

    python -m training.scenario [SOURCE] [--traffic N] [--only poisoned|honest] [--out DIR]

1. A local stack (broker, tritonserver with the shipped model, worker) on free ports,
   serving a copy of ``model_repo/`` under ``--out``; the audit sample is raised to 20%
   so that a short run reviews some confident verdicts too.
2. Traffic: ``--traffic`` turns of a public source whose pattern the shipped model
   handles badly, judged by the worker. The default, ``stormfront``, is sentences of
   a white-supremacist forum, human-labelled hate (unsafe O1) or not (de Gibert et
   al. 2018; the shipped model never trained on it): its coded slang and its
   hate-free posts about the same groups, which the shipped model barely tells apart
   (AUPRC ~0.3 at a 13% base rate). ``gptfuzz_responses`` (chatbots' replies to
   jailbreak-wrapped harmful questions) is the agent-side pattern. Conversations are
   split in halves by a hash of their id (Stormfront: the post; GPTFuzz: the
   question); one half is traffic, the other is held out, so the held-out slice is
   posts (questions) no review has seen. Each turn of the traffic is sent in a chat
   of its own (:func:`chat_id`), as different users' chats are.
3. Twice, each time on a reviews topic of its own: a scripted reviewer labels every
   flagged turn (unsafe, uncertain, audit...) and signs each review with its key, and
   ``guardstream retrain`` runs as the CronJob runs it (signed reviews only, the gate
   with the shipped regression set), promoting the candidate into the copy of the
   repository and reloading Triton, or refusing it. First ``poisoned``: the reviewer
   reverses every decision (the worst a reviewer with a valid key can do); then
   ``honest``: the source's gold labels.
4. The held-out slice is scored through Triton before, and after a promotion (a
   refused candidate in process): AUPRC, recall and FPR at the threshold, and the gain
   per 1,000 reviews; the regression set's and validation's numbers come from the
   retrain's own report.

``--encoder-update adapter`` retrains the encoder's adapter too (the default is the
retraining default, the heads alone; docs/retraining.md compares them).

Prints a table and writes ``report.json`` under ``--out``. About 11 minutes on two CPU
cores with the defaults; ``gptfuzz_responses`` (long replies judged in windows) or
``--encoder-update adapter`` (two adapter retrains) take about 45.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr

from guard.conversation import Role, Turn
from guard.events import ChatTurn, Decision, ReviewEvent, now_rfc3339
from guard.loaders import load_guard
from guard.protocol import Classification
from guard.settings import Settings
from guard.taxonomy import PolicyRegistry
from training import promote
from training.dataset import Example, example_from_row
from training.evaluate import classify_through_triton, evaluate_in_process, report_from_scores
from training.public_data import loaders
from training.public_data.catalogue import datasets_root

REVIEWER = "scripted-reviewer"
KEY = "scenario-reviewer-key-0001"


DEFAULT_SOURCE = "stormfront"
HELD_OUT = 400
VARIANTS = ("poisoned", "honest")
#: Where a source's keywords name no category: criminal planning, the commonest harm of
#: GPTFuzz's questions.
FALLBACK_CODE = "O3"
#: Seconds without a new verdict after which the scenario gives up on the worker.
STALL_S = 600
Row = dict[str, Any]


def _half(conversation_id: str) -> int:
    return int(hashlib.sha256(conversation_id.encode()).hexdigest()[:8], 16) % 2


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scenario_settings(out: Path, encoder_update: str | None = None) -> Settings:
    """Settings of a stack of its own, from the defaults alone (no ``GUARDSTREAM_*``
    variable of the caller's reaches it: not another Triton to reload, not a checkpoint
    or seed data that would change what is measured): free ports, a copy of the model
    repository, state under ``out``, the scripted reviewer's key trusted by retraining,
    a 20% audit sample; ``encoder_update``, when given, replaces the retraining
    default."""
    groups = ("kafka", "topics", "worker", "triton", "policy", "review", "training", "local")
    s = Settings(**{g: type(Settings.model_fields[g].default)() for g in groups})
    repo = out / "model_repo"
    shutil.copytree(
        Path(__file__).resolve().parents[1] / "model_repo",
        repo,
        ignore=shutil.ignore_patterns("__pycache__", ".guardstream", ".candidates", ".archive"),
    )
    return s.model_copy(
        update={
            "local": s.local.model_copy(
                update={
                    "data_dir": out,
                    "model_repository": repo,
                    "broker_port": _free_port(),
                    "triton_http_port": _free_port(),
                    "triton_grpc_port": _free_port(),
                    "triton_metrics_port": _free_port(),
                }
            ),
            "worker": s.worker.model_copy(
                update={"web_port": _free_port(), "data_dir": out / "worker"}
            ),
            "policy": s.policy.model_copy(update={"audit_rate": 0.2}),
            "review": s.review.model_copy(update={"reviewer_keys": {REVIEWER: SecretStr(KEY)}}),
            "training": s.training.model_copy(
                update={
                    "work_dir": out / "training",
                    "encoder_update": encoder_update or s.training.encoder_update,
                }
            ),
        }
    ).for_local_stack()


def chat_id(row: dict[str, Any]) -> str:
    """The conversation id a row's turn is sent under: one chat per row, as in real
    traffic, where many users ask the same question in chats of their own. (A source's
    own conversation id can be its question, GPTFuzz's is: every reply to one question
    would then be one conversation, and the reviews' split, which keeps a conversation
    whole, would put about ten questions in each of validation and calibration.)"""
    return f"{row['conversation_id']}/{row['id']}"


def _turns(rows: list[dict[str, Any]]) -> list[ChatTurn]:
    """Each row's last turn as a chat-turn event (in a chat of its own, :func:`chat_id`),
    its earlier turns as the context."""
    out = []
    for r in rows:
        *earlier, last = r["conversation"]
        context = tuple(Turn(Role(t["role"]), t["content"]) for t in earlier)
        out.append(
            ChatTurn(
                r["id"],
                chat_id(r),
                len(context),
                Role(last["role"]),
                last["content"],
                now_rfc3339(),
                context=context or None,
            )
        )
    return out


def _reviews(
    flagged: list[dict[str, Any]], gold: dict[str, Example], poisoned: bool
) -> list[bytes]:
    """The scripted reviewer's signed decision on each flagged turn it knows. An unsafe
    decision names at least one category, as every review must: the row's own, else
    :data:`FALLBACK_CODE`."""
    out = []
    for event in flagged:
        ex = gold.get(str(event["turn"]["event_id"]))
        if ex is None:
            continue
        unsafe = ex.unsafe != poisoned
        review = ReviewEvent(
            f"review-{event['flagged_id']}",
            str(event["flagged_id"]),
            Decision.UNSAFE if unsafe else Decision.SAFE,
            (ex.categories or (FALLBACK_CODE,)) if unsafe else (),
            REVIEWER,
            now_rfc3339(),
        ).signed(KEY.encode())
        out.append(review.to_json())
    return out


def _numbers(report: dict[str, Any]) -> dict[str, Any]:
    return {k: report.get(k) for k in ("n", "positives", "auprc", "recall", "fpr")}


def served_numbers(s: Settings, held: list[Example]) -> dict[str, Any]:
    """The held-out slice through Triton (what applications get), and which version
    answered."""
    results, _ = asyncio.run(classify_through_triton(s.triton, held, progress=False))
    scored = [(e, r) for e, r in zip(held, results, strict=True) if isinstance(r, Classification)]
    report = report_from_scores(
        [e for e, _ in scored],
        [r.answer.p_unsafe for _, r in scored],
        [r.answer.unsafe for _, r in scored],
    )
    return {**_numbers(report), "versions": sorted({r.model_version for _, r in scored})}


def split_rows(
    rows: list[dict[str, Any]], traffic: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Traffic (up to ``traffic`` rows of one half of the conversations) and the held-out
    slice (up to :data:`HELD_OUT` rows of the other half), each shuffled with seed 0."""
    halves: tuple[list[Row], list[Row]] = ([], [])
    for r in rows:
        halves[_half(r["conversation_id"])].append(r)
    for h in halves:
        random.Random(0).shuffle(h)
    return halves[0][:traffic], halves[1][:HELD_OUT]


def run(
    source: str,
    traffic: int,
    out: Path,
    variants: tuple[str, ...] = VARIANTS,
    encoder_update: str | None = None,
) -> dict[str, Any]:
    """Judge the traffic once, then for each variant (``poisoned``, ``honest``) let the
    scripted reviewer label the flagged turns on a reviews topic of its own and retrain
    from it; the poisoned run goes first, so that both start from the shipped model."""
    from stream_app.kafka_io import follow, produce, read_all
    from stream_app.local_stack import local_services

    policies = PolicyRegistry()
    sent_rows, held_rows = split_rows(getattr(loaders, f"load_{source}")(datasets_root()), traffic)
    held = [example_from_row(r, policies) for r in held_rows]
    gold = {r["id"]: example_from_row(r, policies) for r in sent_rows}
    s = scenario_settings(out, encoder_update)
    report: dict[str, Any] = {
        "source": source,
        "encoder_update": s.training.encoder_update,
        "traffic": len(sent_rows),
        "held_out": len(held),
    }
    with local_services(s):
        report["held_out_before"] = served_numbers(s, held)
        turns = _turns(sent_rows)
        started = time.monotonic()

        async def judge() -> int:
            await produce(s, [(t.conversation_id.encode(), t.to_json()) for t in turns])
            want, seen = {t.event_id for t in turns}, set[str]()
            while not want <= seen:
                before = len(seen & want)
                async for v in follow(s, s.topics.verdicts, timeout_s=STALL_S):
                    seen.add(str(v["event_id"]))
                    if want <= seen:
                        break
                if len(seen & want) == before:
                    break  # no verdict for STALL_S seconds: the worker is stuck
            return len(seen & want)

        report["judged"] = asyncio.run(judge())
        if report["judged"] < len(turns):
            raise RuntimeError(
                f"the worker judged {report['judged']} of {len(turns)} turns and then none for"
                f" {STALL_S} s: see {s.local.data_dir / 'worker.log'}"
            )
        report["judge_seconds"] = round(time.monotonic() - started, 1)
        flagged = _settled(lambda: asyncio.run(read_all(s, s.topics.flagged)))
        reasons: dict[str, int] = {}
        for f in flagged:
            for reason in f["reasons"]:
                reasons[reason] = reasons.get(reason, 0) + 1
        report["flagged"] = {"turns": len(flagged), "reasons": reasons}
        model_dir = s.local.model_repository / s.triton.model_name
        for variant in variants:
            report[variant] = _retrain_variant(s, variant, flagged, gold, held, out)
            if report[variant]["new_version"] and variant != variants[-1]:
                # The next variant starts from the shipped model too.
                promote.rollback(model_dir, 1)
                promote.reload_replicas(
                    s.triton.control_targets, s.triton.model_name, s.triton.model_control_key
                )
                report[variant]["rolled_back"] = True
    for variant in variants:
        _refused_candidate(report[variant], held, policies)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report


def _settled(read: Callable[[], list[bytes]], pause_s: float = 3.0) -> list[dict[str, Any]]:
    """What ``read`` returns once two reads ``pause_s`` apart agree (the worker writes a
    turn's flagged record beside its verdict; the last ones may still be in flight)."""
    records = read()
    while True:
        time.sleep(pause_s)
        again = read()
        if len(again) == len(records):
            return [orjson.loads(b) for b in again]
        records = again


def _retrain_variant(
    s: Settings,
    variant: str,
    flagged: list[dict[str, Any]],
    gold: dict[str, Example],
    held: list[Example],
    out: Path,
) -> dict[str, Any]:
    from stream_app.kafka_io import produce
    from training.retrain import retrain

    s = s.model_copy(
        update={
            "topics": s.topics.model_copy(update={"reviews": f"{s.topics.reviews}-{variant}"}),
            "training": s.training.model_copy(update={"work_dir": out / "training" / variant}),
        }
    )
    reviews = _reviews(flagged, gold, poisoned=variant == "poisoned")
    # Keyed by flagged id, as the review contract says (one partition holds a turn's).
    keyed = [(orjson.loads(r)["flagged_id"].encode(), r) for r in reviews]
    asyncio.run(produce(s, keyed, topic=s.topics.reviews))
    started = time.monotonic()
    result = retrain(s)
    report: dict[str, Any] = {
        "reviews": len(reviews),
        "unsafe_reviews": sum(b'"label":"unsafe"' in r for r in reviews),
        "retrain_seconds": round(time.monotonic() - started, 1),
        "status": result.status,
        "reason": result.reason,
        "dataset": result.dataset_version,
        "new_version": result.new_version,
        "candidate_checkpoint": result.candidate_checkpoint,
        "failed_checks": [c["rule"] for c in result.checks if not c["passed"]],
        "validation_serving": _numbers(result.serving),
        "validation_candidate": _numbers(result.candidate),
        "regression_serving": _numbers(result.regression.get("serving") or {}),
        "regression_candidate": _numbers(result.regression.get("candidate") or {}),
        "replicas": result.replicas,
    }
    if result.new_version:
        report["held_out_after"] = served_numbers(s, held)
    return report


def _refused_candidate(
    report: dict[str, Any], held: list[Example], policies: PolicyRegistry
) -> None:
    """What a refused candidate would have done on the held-out slice."""
    if report["candidate_checkpoint"] and not report["new_version"]:
        refused = load_guard(Path(report["candidate_checkpoint"]))
        report["held_out_candidate"] = _numbers(evaluate_in_process(refused, held, policies))


def gain_per_1000_reviews(before: dict[str, Any], after: dict[str, Any], reviews: int) -> float:
    """Held-out AUPRC gained per 1,000 reviews."""
    return round((after["auprc"] - before["auprc"]) * 1000 / reviews, 4)


def summary(report: dict[str, Any]) -> str:
    """The report as a short table."""

    def row(name: str, n: dict[str, Any] | None) -> str:
        if not n or n.get("auprc") is None:
            return f"| {name} | n/a | | | |"
        return f"| {name} | {n['n']} | {n['auprc']:.3f} | {n['recall']:.3f} | {n['fpr']:.3f} |"

    lines = [
        f"source {report['source']} (retraining: {report['encoder_update']}): "
        f"{report['traffic']} turns judged in "
        f"{report['judge_seconds']} s, {report['flagged']['turns']} flagged "
        f"{report['flagged']['reasons']}; held-out slice {report['held_out']} turns",
        "",
        "| set | n | AUPRC | recall | FPR |",
        "|---|---|---|---|---|",
        row("held-out slice, served before", report["held_out_before"]),
    ]
    for variant in VARIANTS:
        r = report.get(variant)
        if r is None:
            continue
        after = r.get("held_out_after") or r.get("held_out_candidate")
        which = "served after" if r["new_version"] else "refused candidate"
        lines += [
            row(f"{variant}: held-out slice, {which}", after),
            row(f"{variant}: regression set, serving", r["regression_serving"]),
            row(f"{variant}: regression set, candidate", r["regression_candidate"]),
            row(f"{variant}: validation (its reviews), serving", r["validation_serving"]),
            row(f"{variant}: validation (its reviews), candidate", r["validation_candidate"]),
        ]
    for variant in VARIANTS:
        r = report.get(variant)
        if r is None:
            continue
        lines.append(
            f"\n{variant}: {r['reviews']} reviews ({r['unsafe_reviews']} unsafe), retrain "
            f"{r['retrain_seconds']} s: {r['status']} ({r['reason']})"
        )
        if r.get("held_out_after"):
            gain = gain_per_1000_reviews(
                report["held_out_before"], r["held_out_after"], r["reviews"]
            )
            lines.append(f"{variant}: held-out AUPRC gain per 1,000 reviews: {gain}")
    return "\n".join(lines)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "source", nargs="?", default=DEFAULT_SOURCE, help="a loader of training.public_data.loaders"
    )
    ap.add_argument("--traffic", type=int, default=1000, help="turns of traffic to judge")
    ap.add_argument("--only", choices=VARIANTS, help="one variant (default: poisoned, then honest)")
    ap.add_argument("--out", type=Path, default=None, help="work directory (default: a new one)")
    ap.add_argument(
        "--encoder-update",
        choices=("heads", "adapter"),
        default=None,
        help="what retraining moves (default: the retraining default, heads)",
    )


def run_command(args: argparse.Namespace) -> int:
    """Run, print the table; exit 1 when poisoned reviews got a candidate promoted."""
    out = args.out or Path(tempfile.mkdtemp(prefix="guardstream-scenario-"))
    if out.exists() and any(out.iterdir()):
        print(f"guardstream scenario: {out} is not empty: give a new directory", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    variants = (args.only,) if args.only else VARIANTS
    report = run(args.source, args.traffic, out, variants, args.encoder_update)
    print(summary(report))
    print(f"report: {out / 'report.json'}")
    poisoned = report.get("poisoned")
    return 1 if poisoned and poisoned["status"] != "rejected" else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    return run_command(ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
