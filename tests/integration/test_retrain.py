"""The retraining loop: review events on the real broker -> new version served by Triton."""

from __future__ import annotations

import asyncio
import random
import shutil
from pathlib import Path

import orjson
import pytest
from pydantic import SecretStr
from tritonclient.utils import InferenceServerException

from guard.conversation import Role, Turn
from guard.events import ChatTurn, now_rfc3339
from guard.protocol import ClassifyRequest
from guard.settings import Settings
from stream_app.kafka_io import produce
from stream_app.launchers.tritonserver import TritonPorts, triton_process
from stream_app.triton_client import GuardClient
from tests.conftest import ROOT, free_port
from tests.streaming import isolated_settings
from tests.unit.test_dataset import review
from training import promote
from training.retrain import retrain

#: The model-control key Triton checks on model loads (a Secret in the chart).
KEY = "test-model-control-key"

pytestmark = pytest.mark.integration


WORDS = [
    "river",
    "stone",
    "window",
    "apple",
    "garden",
    "music",
    "paper",
    "winter",
    "orange",
    "table",
    "candle",
    "cloud",
    "pencil",
    "forest",
    "bottle",
    "mirror",
    "ladder",
    "ticket",
    "violin",
    "blanket",
]


def _flagged(i: int, unsafe: bool) -> bytes:
    # Random filler around one keyword: an untrained model cannot rank these by chance.
    rng = random.Random(i)
    filler = [rng.choice(WORDS) for _ in range(12)]
    filler.insert(rng.randint(0, 12), "bomb" if unsafe else "bread")
    text = " ".join(filler)
    turn = ChatTurn(f"e{i}", f"conv{i}", 0, Role.USER, text, now_rfc3339())
    return orjson.dumps(
        {
            "schema_version": 1,
            "flagged_id": f"f{i}",
            "reasons": ["uncertain"],
            "turn": turn.to_dict(),
            "context": [],
            "verdict": {
                "verdict_id": f"f{i}",
                "policy_id": "llama-guard-1",
                "policy_version": "1",
                "verdict": "safe",
                "p_unsafe": 0.5,
                "categories": [],
            },
        }
    )


def _served_version(s: Settings) -> str:
    async def run() -> str:
        async with GuardClient(s.triton) as c:
            await c.wait_ready(60)
            r = await c.classify(ClassifyRequest((Turn(Role.USER, "hello"),), Role.USER))
            return r.model_version

    return asyncio.run(run())


def test_review_events_to_a_new_served_version_then_reject_then_rollback(
    kafka_broker: str, tiny_lg1: Path, tiny_random: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(
        ROOT / "model_repo" / "guard",
        repo / "guard",
        ignore=lambda d, names: [
            n for n in names if n == "__pycache__" or (n.isdigit() and n != "1")
        ],
    )
    ports = TritonPorts(free_port(), free_port(), free_port())
    base = isolated_settings(kafka_broker, f"127.0.0.1:{ports.grpc}", tmp_path)
    s = base.model_copy(
        update={
            "training": base.training.model_copy(
                update={
                    "work_dir": tmp_path / "training",
                    "epochs": 50.0,
                    "max_steps": 60,
                    "batch_size": 8,
                    "learning_rate": 5e-3,
                    "lora": False,  # a 2-layer random model: train it all
                    "validation_fraction": 0.3,
                    "promotion_margin": 0.05,
                    "augment_probability": 0.0,
                    # A tiny random LLM learns one keyword here: the shipped regression
                    # set means nothing to it, and its validation split is ~24 rows. The
                    # gate's rules are tested on their own (test_gate.py) and with the
                    # shipped model (test_encoder_retrain.py).
                    "regression_gate": False,
                    "gate_min_rows": 10,
                    # Sixty steps teach it to rank (validation AUPRC about 0.5 -> 0.8), not
                    # where its threshold falls: this test is about the loop, so only the
                    # ranking rule counts here.
                    "gate_recall_tolerance": 1.0,
                    "gate_fpr_tolerance": 1.0,
                    "gate_category_tolerance": 1.0,
                    "split_key": SecretStr("test-split-key"),  # the same split every run
                }
            ),
            "local": base.local.model_copy(update={"model_repository": repo}),
            # Triton's model-repository API restricted to holders of a key, as the chart runs it.
            "triton": base.triton.model_copy(update={"model_control_key": SecretStr(KEY)}),
        }
    )
    labels = {i: i % 2 == 0 for i in range(80)}
    reviews = [
        review(f"f{i}", "unsafe" if u else "safe", ["O4"] if u else [], "2026-11-28T10:00:00Z")
        for i, u in labels.items()
    ]
    bad = [
        b"{oops",
        review("f-missing", "safe", [], "2026-11-28T10:00:00Z", rid="r-missing"),
        review("f1", "unsafe", ["S1"], "2026-11-28T12:00:00Z", rid="r-badcode"),
    ]
    asyncio.run(
        produce(s, [(None, _flagged(i, u)) for i, u in labels.items()], topic=s.topics.flagged)
    )
    asyncio.run(produce(s, [(None, r) for r in reviews + bad], topic=s.topics.reviews))

    env = {"GUARDSTREAM_MODEL_CHECKPOINT": str(tiny_lg1)}
    restricted = [
        f"--grpc-restricted-protocol=model-repository:{promote.MODEL_CONTROL_HEADER}={KEY}",
        f"--http-restricted-api=model-repository:{promote.MODEL_CONTROL_HEADER}={KEY}",
    ]
    with triton_process(
        repo,
        tmp_path / "triton",
        ports,
        explicit_models=["guard"],
        env=env,
        timeout_s=240,
        extra_args=restricted,
    ):
        import os

        os.environ["GUARDSTREAM_MODEL_CHECKPOINT"] = str(tiny_lg1)  # version 1's weights
        try:
            assert _served_version(s) == "1"
            first = retrain(s)
            assert first.status == "promoted", first.reason
            assert first.new_version == 2 and promote.versions(repo / "guard") == [1, 2]
            assert (repo / "guard" / "2" / "checkpoint" / "config.json").exists()
            assert first.candidate["auprc"] > first.serving["auprc"]
            reasons = {r["ref"]: r["reason"] for r in first.rejected_reviews}
            assert reasons["r-missing"] == "unknown flagged turn 'f-missing'"
            assert "unknown categories for llama-guard-1@1: S1" in reasons["r-badcode"]
            assert any("malformed review" in r for r in reasons.values())
            assert _served_version(s) == "2"

            # A worse candidate (one step from an untrained model) changes nothing.
            worse = s.model_copy(
                update={
                    "training": s.training.model_copy(
                        update={"base_checkpoint": tiny_random, "max_steps": 1}
                    )
                }
            )
            second = retrain(worse)
            assert second.status == "rejected", second.reason
            assert promote.versions(repo / "guard") == [1, 2]
            assert _served_version(s) == "2"

            assert promote.rollback(repo / "guard") == [2]
            # Without the key (anyone else on the network) Triton refuses to load models.
            for key in (None, "wrong-key"):
                with pytest.raises(
                    InferenceServerException, match=r"(?i)unauthenticated|restricted"
                ):
                    promote.reload_model(s.triton.url, "guard", control_key=key)
            assert _served_version(s) == "2"
            assert promote.reload_model(s.triton.url, "guard", control_key=KEY) == ["1"]
            assert _served_version(s) == "1"
        finally:
            os.environ.pop("GUARDSTREAM_MODEL_CHECKPOINT", None)
