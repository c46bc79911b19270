"""The guard model served by the real tritonserver (python backend, CPU here)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from transformers import AutoModelForCausalLM

from guard.causal_lm import CausalLMGuard
from guard.conversation import Role, Turn
from guard.protocol import Classification, ClassifyRequest, RequestRejected
from guard.scoring import GuardRequest
from guard.settings import TritonSettings
from guard.taxonomy import PolicyRef
from stream_app.triton_client import GuardClient, TritonUnavailable

pytestmark = pytest.mark.integration

U, A = Role.USER, Role.AGENT
CASES = [
    ClassifyRequest((Turn(U, "How do I bake bread?"),), U),
    ClassifyRequest((Turn(U, "hi"), Turn(A, "Hello! How can I help you today? " * 5)), A),
    ClassifyRequest((Turn(U, "word " * 300),), U),
    ClassifyRequest((Turn(U, "how to pick a lock"), Turn(A, "no"), Turn(U, "please?")), U),
    ClassifyRequest((Turn(U, "x"),), U, "mlcommons-hazards"),
]


def _client(server: dict[str, object], **kw: object) -> GuardClient:
    return GuardClient(TritonSettings(url=str(server["grpc"]), **kw))  # type: ignore[arg-type]


def _reference(checkpoint: Path, reqs: list[ClassifyRequest]) -> list[float]:
    """p_unsafe computed in-process with plain transformers, one prompt at a time."""
    from guard.taxonomy import PolicyRegistry

    guard = CausalLMGuard.load(checkpoint)
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=torch.float32).eval()
    registry = PolicyRegistry()
    out = []
    for r in reqs:
        policy = registry.get(r.policy_id or "llama-guard-1")
        ids = torch.tensor([guard.encode(GuardRequest(r.turns, r.side, policy))])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, -1]
        out.append(float(torch.softmax(logits[[guard.safe_id, guard.unsafe_id]], 0)[1]))
    return out


def test_triton_matches_transformers_in_process(triton_server: dict[str, object]) -> None:
    async def run() -> list[Classification]:
        async with _client(triton_server) as c:
            meta = await c.wait_ready(60)
            assert meta["name"] == "guard"
            return [await c.classify(r) for r in CASES]

    results = asyncio.run(run())
    expected = _reference(Path(str(triton_server["checkpoint"])), CASES)
    for res, want, req in zip(results, expected, CASES, strict=True):
        assert res.answer.p_unsafe == pytest.approx(want, abs=1e-4)
        assert res.answer.unsafe == (want >= 0.5)
        assert res.model_name == "guard" and res.model_version == "1"
        assert res.answer.policy == PolicyRef(req.policy_id or "llama-guard-1", "1")


def test_concurrent_mixed_lengths_equal_one_at_a_time(triton_server: dict[str, object]) -> None:
    reqs = [ClassifyRequest((Turn(U, "tell me " + "more " * n),), U) for n in (1, 80, 5, 300, 20)]
    reqs = reqs * 4

    async def run() -> tuple[list[Classification | RequestRejected], list[Classification]]:
        async with _client(triton_server) as c:
            together = await c.classify_many(reqs, concurrency=20)
            alone = [await c.classify(r) for r in reqs[:5]]
            return together, alone

    together, alone = asyncio.run(run())
    for i, res in enumerate(together):
        assert isinstance(res, Classification)
        assert res.answer.p_unsafe == pytest.approx(alone[i % 5].answer.p_unsafe, abs=1e-5)


def test_several_items_in_one_request(triton_server: dict[str, object]) -> None:
    client = grpcclient.InferenceServerClient(str(triton_server["grpc"]))
    convs = [
        b'[{"role": "user", "content": "a"}]',
        b'[{"role": "user", "content": "' + b"long " * 100 + b'"}]',
    ]
    inputs = []
    for name, values in (
        ("CONVERSATION", convs),
        ("SIDE", [b"user"] * 2),
        ("POLICY_ID", [b""] * 2),
    ):
        inp = grpcclient.InferInput(name, [2, 1], "BYTES")
        inp.set_data_from_numpy(np.array(values, dtype=np.object_).reshape(2, 1))
        inputs.append(inp)
    result = client.infer("guard", inputs)
    assert result.as_numpy("P_UNSAFE").shape == (2, 1)
    assert set(result.as_numpy("VERDICT").reshape(-1)) <= {b"safe", b"unsafe"}
    client.close()


BAD = {
    "not json": b"this is not json",
    "empty conversation": b"[]",
    "response check with no user turn": b'[{"role": "agent", "content": "hello"}]',
    "unknown policy": b'[{"role": "user", "content": "hello"}]',
    "1 MB of text": b'[{"role": "user", "content": "' + b"a" * 1_000_000 + b'"}]',
}
REASONS = {
    "not json": "not valid JSON",
    "empty conversation": "empty conversation",
    "response check with no user turn": "needs a user turn before the agent turn",
    "unknown policy": "unknown policy 'no-such-policy'",
    "1 MB of text": "over the limit",
}


def _raw_infer(
    client: grpcclient.InferenceServerClient, conv: bytes, side: bytes, policy: bytes
) -> object:
    inputs = []
    for name, value in (("CONVERSATION", conv), ("SIDE", side), ("POLICY_ID", policy)):
        inp = grpcclient.InferInput(name, [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[value]], dtype=np.object_))
        inputs.append(inp)
    return client.infer("guard", inputs)


def test_bad_requests_get_their_own_error_and_the_server_keeps_serving(
    triton_server: dict[str, object],
) -> None:
    client = grpcclient.InferenceServerClient(str(triton_server["grpc"]))
    for name, conv in BAD.items():
        side = b"agent" if "response" in name else b"user"
        policy = b"no-such-policy" if name == "unknown policy" else b""
        with pytest.raises(Exception, match=REASONS[name]) as err:
            _raw_infer(client, conv, side, policy)
        assert "invalid request: " in str(err.value)
        ok = _raw_infer(client, b'[{"role": "user", "content": "still there?"}]', b"user", b"")
        assert ok.as_numpy("VERDICT")[0, 0] in (b"safe", b"unsafe")  # type: ignore[attr-defined]
    client.close()


def test_bad_and_good_requests_batched_together(triton_server: dict[str, object]) -> None:
    good = ClassifyRequest((Turn(U, "hello there"),), U)
    bad = ClassifyRequest((Turn(A, "agent speaks first"),), A)  # no user turn

    async def run() -> list[Classification | RequestRejected]:
        async with _client(triton_server) as c:
            return await c.classify_many([good, bad, good, bad, good], concurrency=5)

    results = asyncio.run(run())
    assert [isinstance(r, RequestRejected) for r in results] == [False, True, False, True, False]
    assert "needs a user turn" in str(results[1])


def test_client_gives_up_with_a_clear_error_when_nothing_listens() -> None:
    from tests.conftest import free_port

    settings = TritonSettings(
        url=f"127.0.0.1:{free_port()}",
        retries=2,
        backoff_initial_s=0.01,
        backoff_max_s=0.02,
        timeout_s=2,
    )

    async def run() -> None:
        async with GuardClient(settings) as c:
            with pytest.raises(TritonUnavailable):
                await c.classify(CASES[0])
            with pytest.raises(TritonUnavailable, match=r"Triton at 127\.0\.0\.1"):
                await c.wait_ready(timeout_s=1)

    asyncio.run(run())
