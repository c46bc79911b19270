"""``guardstream retrain``: dataset -> fine-tune -> evaluate -> promote, in one run.

Safe to run on a schedule: with too few reviewed examples it does nothing; a
candidate that does not beat the serving version by the margin changes
nothing; a promoted version appears atomically and Triton is asked to load it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guard.encoder import EncoderHeadGuard
from guard.families import format_for
from guard.loaders import MANIFEST, load_guard, read_manifest
from guard.serving import ServiceConfig, deployment_parameters, scorer_config
from guard.settings import CALIBRATION_SET, REGRESSION_SET, REPLAY_SET, Settings
from guard.taxonomy import PolicyRegistry
from stream_app.launchers.model import SHIPPED_MODEL
from training import promote
from training.dataset import (
    Example,
    Rejection,
    calibration_rows,
    join_reviews,
    read_rows,
    split_key,
    trainable,
    write_snapshot,
)
from training.encoder_retrain import (
    AdapterUpdate,
    HeadUpdate,
    hold_operating_point,
    retrain_adapter_and_heads,
    retrain_heads,
)
from training.evaluate import compare_in_process
from training.finetune import FinetuneConfig, finetune
from training.formatting import Augmentations
from training.gate import GateRules, failures, gate, passed
from training.metrics import table

log = logging.getLogger(__name__)


@dataclass
class RetrainResult:
    status: str  # "promoted" | "awaiting approval" | "rejected" | "skipped"
    reason: str
    dataset_version: str | None = None
    serving_version: int | None = None
    new_version: int | None = None
    candidate: dict[str, Any] = field(default_factory=dict)
    serving: dict[str, Any] = field(default_factory=dict)
    rejected_reviews: list[dict[str, str]] = field(default_factory=list)
    #: Per Triton replica, the versions it serves after the reload (or why it did not load).
    replicas: dict[str, list[str] | str] = field(default_factory=dict)
    #: Both models on the regression set, and every check of the gate.
    regression: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    #: The staged candidate's id when it awaits approval.
    candidate_id: str | None = None
    #: Where the candidate was trained (kept when refused, for a look at it).
    candidate_checkpoint: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def model_parameters(model_dir: Path) -> dict[str, str]:
    """The string parameters of ``model_dir/config.pbtxt`` (as Triton reads them:
    ``#`` comments are not parameters)."""
    lines = (model_dir / "config.pbtxt").read_text().splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("#"))
    pattern = r'key:\s*"([^"]+)"\s*value:\s*{\s*string_value:\s*"([^"]*)"\s*}'
    return dict(re.findall(pattern, text))


def collect_examples(
    s: Settings, policies: PolicyRegistry
) -> tuple[list[Example], list[Rejection]]:
    """Reviewed examples from the topics, plus the seed files."""
    from stream_app.kafka_io import read_all

    async def read() -> tuple[list[bytes], list[bytes]]:
        return await read_all(s, s.topics.flagged), await read_all(s, s.topics.reviews)

    flagged, reviews = asyncio.run(read())
    keys = {r: k.get_secret_value().encode() for r, k in s.review.reviewer_keys.items()}
    if not keys:
        log.warning(
            "reviews are not authenticated (GUARDSTREAM_REVIEW__REVIEWER_KEYS is unset): "
            "anyone who can write to %s can label training data",
            s.topics.reviews,
        )
    examples, rejected = join_reviews(flagged, reviews, policies, keys)
    for path in s.training.seed_data:
        seed, bad = read_rows(path, policies)
        usable, untrainable = trainable(seed)
        examples += usable
        rejected += bad + untrainable
    return examples, rejected


def retrain(
    s: Settings,
    examples: list[Example] | None = None,
    rejected: list[Rejection] | None = None,
    reload: bool = True,
) -> RetrainResult:
    t = s.training
    policies = PolicyRegistry.with_directory(s.policy.policy_dir)
    if examples is None:
        examples, rejected = collect_examples(s, policies)
    rejected = rejected or []
    for r in rejected:
        log.warning("left out %s: %s", r.ref, r.reason)
    rej = [{"ref": r.ref, "reason": r.reason} for r in rejected]
    reviewed = [e for e in examples if e.source in ("review", "audit")]
    if len(examples) < t.min_examples:
        return RetrainResult(
            "skipped", f"{len(examples)} examples (< {t.min_examples})", rejected_reviews=rej
        )
    configured = t.split_key.get_secret_value().encode() if t.split_key else None
    key = split_key(configured, s.local.model_repository / ".guardstream" / "split.key")
    snap = write_snapshot(
        t.work_dir / "datasets",
        examples,
        t.validation_fraction,
        key,
        rejected,
        t.calibration_fraction,
    )
    log.info(
        "dataset %s: %d train, %d validation, %d calibration (%d reviewed)",
        snap.version,
        len(snap.train),
        len(snap.validation),
        len(snap.calibration),
        len(reviewed),
    )
    if (
        not snap.train
        or not any(e.unsafe for e in snap.validation)
        or all(e.unsafe for e in snap.validation)
    ):
        return RetrainResult(
            "skipped",
            "the validation split needs safe and unsafe examples",
            snap.version,
            rejected_reviews=rej,
        )
    model_dir = s.local.model_repository / s.triton.model_name
    # As the served model reads them: the deployment's policy settings override config.pbtxt.
    params = {**model_parameters(model_dir), **deployment_parameters(s.policy)}
    scorer = scorer_config(params)
    serving_v = promote.serving_version(model_dir)
    serving_ckpt = promote.checkpoint_of(
        model_dir,
        serving_v,
        Path(params["checkpoint"]) if "checkpoint" in params else SHIPPED_MODEL,
    )
    base = Path(t.base_checkpoint or serving_ckpt)
    # Named by what it trains from, so that a run stopped half-way resumes (state.pt).
    run_dir = t.work_dir / "runs" / f"{snap.version}-v{serving_v}"
    lineage = {"base": str(base), "serving_version": serving_v, "dataset": snap.version}
    manifest = read_manifest(base)
    # The calibration split's safe reviewed rows hold the operating point on the sides
    # where they are enough; everything else in it trains (its unsafe rows, seed rows,
    # and all of it where no operating point is held: only encoder guards are shifted).
    holds = (
        t.hold_operating_point
        and manifest["kind"] == "encoder-head"
        and read_manifest(serving_ckpt)["kind"] == "encoder-head"
    )
    held_on, spare = (
        calibration_rows(snap.calibration, t.gate_min_rows) if holds else ([], snap.calibration)
    )
    train = snap.train + spare + [e for e in held_on if e.unsafe]
    held_on = [e for e in held_on if not e.unsafe]
    if snap.calibration:
        log.info(
            "calibration split: %d safe rows hold the operating point, %d train",
            len(held_on),
            len(snap.calibration) - len(held_on),
        )
    if (
        manifest["kind"] == "encoder-head"
        and t.encoder_update == "adapter"
        and manifest.get("adapter")
    ):
        replay, unreadable = read_rows(t.replay_data or REPLAY_SET, policies)
        if unreadable:
            raise ValueError(f"{t.replay_data or REPLAY_SET}: unreadable rows {unreadable[:3]}")
        candidate_ckpt = retrain_adapter_and_heads(
            base,
            train,
            replay,
            policies,
            run_dir,
            AdapterUpdate(
                epochs=t.adapter_epochs,
                lr=t.adapter_learning_rate,
                replay_weight=t.replay_weight,
                seed=t.seed,
            ),
            HeadUpdate(pull=t.head_pull),
            lineage,
            log.info,
        )
    elif manifest["kind"] == "encoder-head":
        if t.encoder_update == "adapter":
            log.warning("%s has no adapter to continue: retraining its heads alone", base)
        candidate_ckpt = retrain_heads(
            base, train, policies, run_dir, HeadUpdate(pull=t.head_pull), lineage
        )
    else:
        candidate_ckpt = finetune(
            base,
            train,
            policies,
            run_dir,
            FinetuneConfig(
                prompt_format=format_for(base, scorer.prompt_format),
                epochs=t.epochs,
                max_steps=t.max_steps,
                batch_size=t.batch_size,
                learning_rate=t.learning_rate,
                lora=t.lora,
                lora_rank=t.lora_rank,
                seed=t.seed,
                augmentations=Augmentations(
                    t.drop_categories, t.drop_violated, t.shuffle_codes, t.augment_probability
                ),
            ),
        )
    serv_guard = load_guard(serving_ckpt, scorer)
    served_as = ServiceConfig.for_evaluation(params)  # windows etc. as Triton's model
    if holds and isinstance(serv_guard, EncoderHeadGuard):
        path = t.calibration_data or CALIBRATION_SET
        calibration, unreadable = read_rows(path, policies)
        if unreadable:
            raise ValueError(f"{path}: unreadable rows {unreadable[:3]}")
        held = hold_operating_point(
            candidate_ckpt,
            serv_guard,
            [e for e in calibration if not e.unsafe],
            policies,
            served_as,
            scorer,
            reviewed=held_on,
            min_reviewed=t.gate_min_rows,
        )
        log.info("operating point held on %s and the calibration split: %s", path, held)
    elif t.hold_operating_point:
        log.warning(
            "operating point not held: only encoder guards are shifted (base %s, serving %s)",
            manifest["kind"],
            type(serv_guard).__name__,
        )
    sets = {"validation": snap.validation}
    if t.regression_gate:
        path = t.regression_data or REGRESSION_SET
        regression, unreadable = read_rows(path, policies)
        if unreadable:
            raise ValueError(f"{path}: unreadable rows {unreadable[:3]}")
        sets["regression"] = regression
    cand_guard = load_guard(candidate_ckpt, scorer)
    cand, serv = {}, {}
    for k, xs in sets.items():
        cand[k], serv[k] = compare_in_process(cand_guard, serv_guard, xs, policies, served_as)
    for name, report in [*cand.items(), *serv.items()]:
        if report["rejected"]:  # left out of both models' numbers alike
            log.warning(
                "%d %s rows left out: %s", len(report["rejected"]), name, report["rejected"][:3]
            )
    for name in sets:
        print(table(serv[name], f"serving version {serving_v} on {name} ({snap.version})"))
        print(table(cand[name], f"candidate on {name}"))
    checks = gate(cand, serv, gate_rules(s))
    result = RetrainResult(
        "rejected", "", snap.version, serving_v, None, cand["validation"], serv["validation"], rej
    )
    result.candidate_checkpoint = str(candidate_ckpt)
    result.regression = {"candidate": cand.get("regression"), "serving": serv.get("regression")}
    result.checks = [c.to_dict() for c in checks]
    if passed(checks) and t.require_approval:
        record_lineage(
            candidate_ckpt,
            {**lineage, "checks": result.checks, "validation": cand["validation"]},
        )
        result.status = "awaiting approval"
        result.candidate_id = f"{model_dir.name}-{run_dir.name}"
        result.reason = (
            f"passed all {len(checks)} checks of the gate; "
            f"`guardstream promote --approve {result.candidate_id}` promotes it"
        )
        promote.stage(model_dir, candidate_ckpt, result.to_dict(), run_dir.name)
    elif passed(checks):
        record_lineage(
            candidate_ckpt,
            {**lineage, "checks": result.checks, "validation": cand["validation"]},
        )
        result.new_version = promote.promote(model_dir, candidate_ckpt)
        result.status = "promoted"
        result.reason = f"passed all {len(checks)} checks of the gate"
        if reload:
            result.replicas = promote.reload_replicas(
                s.triton.control_targets, s.triton.model_name, s.triton.model_control_key
            )
            log.info("triton replicas serve %s versions %s", s.triton.model_name, result.replicas)
    else:
        result.reason = f"{failures(checks)}: serving version {serving_v} stays"
    (run_dir / "report.json").write_text(json.dumps(result.to_dict(), indent=2, default=str))
    return result


def gate_rules(s: Settings) -> GateRules:
    t = s.training
    return GateRules(
        margin=t.promotion_margin,
        min_rows=t.gate_min_rows,
        auprc_tolerance=t.gate_auprc_tolerance,
        recall_tolerance=t.gate_recall_tolerance,
        fpr_tolerance=t.gate_fpr_tolerance,
        category_tolerance=t.gate_category_tolerance,
        significance=t.gate_significance,
    )


def record_lineage(checkpoint: Path, lineage: dict[str, Any]) -> None:
    """Add where ``checkpoint`` comes from (base, serving version, dataset snapshot, the
    gate's checks and numbers) to its manifest, which a promoted version keeps."""
    manifest = read_manifest(checkpoint)
    manifest["lineage"] = lineage
    (checkpoint / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
