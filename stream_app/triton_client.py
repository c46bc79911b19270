"""Typed async client for the guard model on Triton (gRPC).

Transport trouble (server down, deadline, model not loaded) is retried with
exponential backoff; a request the model rejects as invalid is not, and
surfaces as :class:`RequestRejected` with the model's reason.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Sequence

import numpy as np
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.utils import InferenceServerException

from guard.conversation import turns_to_json
from guard.protocol import (
    INPUTS,
    OUTPUTS,
    Classification,
    ClassifyRequest,
    ItemAnswer,
    RequestRejected,
    decode_categories,
    read_verdict,
    rejection_of,
)
from guard.settings import TritonSettings
from guard.taxonomy import PolicyRef

log = logging.getLogger(__name__)

#: gRPC status of a request that ran past its deadline.
DEADLINE_EXCEEDED = "StatusCode.DEADLINE_EXCEEDED"


class TritonUnavailable(RuntimeError):
    """The server or model could not answer (after the allowed retries)."""


class TooSlow(RuntimeError):
    """A request ran past its deadline ``deadline_overruns`` times while the server
    stayed live: the turn, not the server, is the problem."""


class ModelMismatch(RuntimeError):
    """The served model is not the guard model this client speaks to."""


def backoff_delays(initial: float, maximum: float):  # type: ignore[no-untyped-def]
    """Exponential backoff with full jitter: initial, 2x, 4x ... capped."""
    delay = initial
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(delay * 2, maximum)


class GuardClient:
    def __init__(
        self, settings: TritonSettings, on_retry: Callable[[], None] | None = None
    ) -> None:
        self.s = settings
        self._on_retry = on_retry
        self._client = InferenceServerClient(settings.url)
        self._outputs = [InferRequestedOutput(n) for n in OUTPUTS]

    async def close(self) -> None:
        await self._client.close()

    async def __aenter__(self) -> GuardClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_ready(self, timeout_s: float | None = None) -> dict[str, object]:
        """Wait until the model is ready, then check its metadata; return it.

        Raises :class:`TritonUnavailable` on timeout and :class:`ModelMismatch`
        when the model's inputs or outputs are not the guard protocol.
        """
        deadline = time.monotonic() + (timeout_s or self.s.ready_timeout_s)
        last = "no answer"
        while True:
            try:
                if await self._client.is_model_ready(self.s.model_name, self.s.model_version):
                    break
                last = f"model {self.s.model_name!r} is not ready"
            except InferenceServerException as exc:
                last = exc.message() or str(exc)
            if time.monotonic() > deadline:
                raise TritonUnavailable(f"Triton at {self.s.url}: {last}")
            await asyncio.sleep(0.5)
        meta = await self._client.get_model_metadata(
            self.s.model_name, self.s.model_version, as_json=True
        )
        check_metadata(meta)
        return meta  # type: ignore[no-any-return]

    async def classify(
        self, req: ClassifyRequest, *, retry_forever: bool = False
    ) -> Classification:
        inputs = _inputs(req)
        delays = backoff_delays(self.s.backoff_initial_s, self.s.backoff_max_s)
        attempt = overruns = 0
        while True:
            start = time.perf_counter()
            try:
                result = await self._client.infer(
                    self.s.model_name,
                    inputs,
                    model_version=self.s.model_version,
                    outputs=self._outputs,
                    client_timeout=self.s.timeout_s,
                )
            except InferenceServerException as exc:
                msg = exc.message() or str(exc)
                rejected = rejection_of(msg)
                if rejected is not None:
                    raise rejected from None
                attempt += 1
                if self._on_retry is not None:
                    self._on_retry()
                if exc.status() == DEADLINE_EXCEEDED and await self._live():
                    overruns += 1
                    if overruns >= self.s.deadline_overruns:
                        raise TooSlow(
                            f"{overruns} requests ran past the {self.s.timeout_s:g} s deadline"
                        ) from None
                if not retry_forever and attempt > self.s.retries:
                    raise TritonUnavailable(f"{exc.status()}: {msg}") from None
                delay = next(delays)
                log.warning(
                    "triton request failed (%s), retry %d in %.2fs", exc.status(), attempt, delay
                )
                await asyncio.sleep(delay)
                continue
            return _classification(result, self.s.model_name, time.perf_counter() - start)

    async def _live(self) -> bool:
        """Whether the server answers a liveness check within a few seconds."""
        try:
            return bool(await self._client.is_server_live(client_timeout=5.0))
        except InferenceServerException:
            return False

    async def classify_many(
        self,
        reqs: Sequence[ClassifyRequest],
        concurrency: int = 16,
        *,
        retry_forever: bool = False,
        on_done: Callable[[], None] | None = None,
    ) -> list[Classification | RequestRejected | TooSlow]:
        """Classify ``reqs`` with at most ``concurrency`` requests in flight, in order;
        a rejected (or too slow) request's place holds its error. ``on_done`` runs
        after each one."""
        sem = asyncio.Semaphore(concurrency)

        async def one(r: ClassifyRequest) -> Classification | RequestRejected | TooSlow:
            async with sem:
                try:
                    return await self.classify(r, retry_forever=retry_forever)
                except (RequestRejected, TooSlow) as exc:
                    return exc
                finally:
                    if on_done is not None:
                        on_done()

        return list(await asyncio.gather(*(one(r) for r in reqs)))


def check_metadata(meta: dict[str, object]) -> None:
    def by_name(key: str) -> dict[str, str]:
        rows: list[dict[str, str]] = meta.get(key) or []  # type: ignore[assignment]
        return {r["name"]: r["datatype"] for r in rows}

    for key, want in (("inputs", INPUTS), ("outputs", OUTPUTS)):
        got = by_name(key)
        missing = {n: t for n, t in want.items() if got.get(n) != t}
        if missing:
            raise ModelMismatch(
                f"model {meta.get('name')!r} {key} do not match the guard protocol: "
                f"expected {want}, got {got}"
            )


def _inputs(req: ClassifyRequest) -> list[InferInput]:
    values = {
        "CONVERSATION": turns_to_json(req.turns),
        "SIDE": req.side.value.encode(),
        "POLICY_ID": req.policy_id.encode(),
    }
    inputs = []
    for name, value in values.items():
        inp = InferInput(name, [1, 1], "BYTES")
        inp.set_data_from_numpy(np.array([[value]], dtype=np.object_))
        inputs.append(inp)
    return inputs


def _classification(result, model_name: str, seconds: float) -> Classification:  # type: ignore[no-untyped-def]
    def one(name: str):  # type: ignore[no-untyped-def]
        return result.as_numpy(name)[0, 0]

    unsafe, p_unsafe, parse_error = read_verdict(
        bytes(one("VERDICT")), float(one("P_UNSAFE")), bool(one("PARSE_ERROR"))
    )
    answer = ItemAnswer(
        p_unsafe=p_unsafe,
        unsafe=unsafe,
        categories=decode_categories(one("CATEGORIES")),
        parse_error=parse_error,
        policy=PolicyRef.parse(one("POLICY").decode()),
    )
    return Classification(
        answer=answer,
        model_name=model_name,
        model_version=result.get_response().model_version,
        latency_ms=seconds * 1000.0,
    )
