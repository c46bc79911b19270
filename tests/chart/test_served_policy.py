"""The chart's policy values reach the served Llama Guard and change its verdicts.

Runs the real tritonserver with exactly the environment and policy files the rendered
chart gives the Triton pod, serving tests/tiny_guards.py's tiny Llama Guard 3 (trained in
this session to answer by the policy in its prompt).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from guard.conversation import Role, Turn
from guard.protocol import Classification, ClassifyRequest
from guard.settings import TritonSettings
from guard.taxonomy import LLAMA_GUARD_3, PolicyRef
from stream_app.triton_client import GuardClient
from tests.conftest import ROOT, free_port
from tests.tiny_guards import PIZZA, PIZZA_POLICY, WEAPONS

from .test_chart import container, pod_spec, triton

pytestmark = pytest.mark.integration


def _classify(url: str, requests: list[ClassifyRequest]) -> list[Classification]:
    async def run() -> list[Classification]:
        async with GuardClient(TritonSettings(url=url)) as client:
            await client.wait_ready(120)
            return [await client.classify(r) for r in requests]

    return asyncio.run(run())


def test_a_custom_policy_in_the_chart_values_changes_the_served_llama_guards_verdicts(
    render, tiny_lg3: Path, tmp_path: Path
) -> None:
    """Render the chart with the checkpoint and a custom policy as its default (values
    alone), start the real tritonserver with exactly the environment and policy files the
    Triton pod gets, and classify."""
    from stream_app.launchers.tritonserver import TritonPorts, triton_process

    category = PIZZA_POLICY.categories[0]
    docs = render(
        "default",
        "--set",
        f"triton.modelCheckpoint={tiny_lg3}",  # where the weights are mounted in the pod
        "--set",
        f"policy.defaultPolicyId={PIZZA_POLICY.id}",
        "--set",
        f"policy.custom.pizza.id={PIZZA_POLICY.id}",
        "--set-string",
        f"policy.custom.pizza.version={PIZZA_POLICY.version}",
        "--set",
        f"policy.custom.pizza.categories[0].code={category.code}",
        "--set",
        f"policy.custom.pizza.categories[0].name={category.name}",
        "--set",
        f"policy.custom.pizza.categories[0].description={category.description}",
    )
    pod = pod_spec(triton(docs))
    c = container(triton(docs), "triton")
    configmaps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    env = {
        key: value
        for ref in c["envFrom"]
        if "configMapRef" in ref
        for key, value in configmaps[ref["configMapRef"]["name"]].items()
    }
    policy_mount = env["GUARDSTREAM_POLICY__POLICY_DIR"]
    mount = next(m for m in c["volumeMounts"] if m["mountPath"] == policy_mount)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    policy_dir = tmp_path / "policies"  # the ConfigMap volume, as the kubelet mounts it
    policy_dir.mkdir()
    for name, text in configmaps[volume["configMap"]["name"]].items():
        (policy_dir / name).write_text(text)
    env |= {e["name"]: e["value"] for e in c["env"] if e["name"].startswith("GUARDSTREAM_MODEL")}
    assert env["GUARDSTREAM_MODEL_CHECKPOINT"] == str(tiny_lg3)
    env["GUARDSTREAM_POLICY__POLICY_DIR"] = str(policy_dir)

    ports = TritonPorts(free_port(), free_port(), free_port())
    with triton_process(
        ROOT / "model_repo", tmp_path / "triton", ports, explicit_models=["guard"], env=env
    ):
        pizza, weapon = Turn(Role.USER, PIZZA[0]), Turn(Role.USER, WEAPONS[0])
        results = _classify(
            f"127.0.0.1:{ports.grpc}",
            [
                ClassifyRequest((pizza,), Role.USER),  # the chart's default: the custom one
                ClassifyRequest((weapon,), Role.USER),
                ClassifyRequest((pizza,), Role.USER, LLAMA_GUARD_3.id),
                ClassifyRequest((weapon,), Role.USER, LLAMA_GUARD_3.id),
            ],
        )
    default, lg3 = results[:2], results[2:]
    custom = PolicyRef(PIZZA_POLICY.id, PIZZA_POLICY.version)
    assert [r.answer.policy for r in default] == [custom, custom]
    assert [(r.answer.unsafe, [c.code for c in r.answer.categories]) for r in default] == [
        (True, ["P1"]),
        (False, []),
    ]
    assert default[0].answer.categories[0].name == category.name
    # The same turns under Llama Guard 3's own policy: the verdicts follow the policy text.
    assert [(r.answer.unsafe, [c.code for c in r.answer.categories]) for r in lg3] == [
        (False, []),
        (True, ["S9"]),
    ]
    assert all(r.answer.policy == PolicyRef(LLAMA_GUARD_3.id, "1") for r in lg3)
