"""The guard model's wire protocol on Triton: one torch-free home for both sides.

The Triton model (``model_repo/guard``, through :mod:`guard.serving`), the
client (:mod:`stream_app.triton_client`), evaluation and promotion all import
it; ``model_repo/guard/config.pbtxt`` declares the same tensors (a test checks
that they agree). One item = one turn to classify; every tensor is ``[batch, 1]``.

Inputs: ``CONVERSATION`` (JSON ``[{"role", "content"}]``, the turn to classify
last), ``SIDE`` (``user`` | ``agent``), ``POLICY_ID`` (empty: the model's
default policy). Outputs: ``P_UNSAFE``, ``VERDICT`` (``safe`` | ``unsafe``),
``CATEGORIES`` (JSON ``[{"code", "name"}]``), ``PARSE_ERROR`` (the answer
could not be parsed: unsafe, to review), ``POLICY`` (``id@version``).

A request the model cannot judge is answered with an error that starts with
:data:`INVALID_REQUEST`; the client raises :class:`RequestRejected` for it and
never retries it. Anything else is server trouble, retried.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from guard.conversation import Role, Turn
from guard.errors import InvalidInput
from guard.taxonomy import CategoryRef, PolicyRef

#: Input tensor name -> Triton datatype.
INPUTS = {"CONVERSATION": "BYTES", "SIDE": "BYTES", "POLICY_ID": "BYTES"}
#: Output tensor name -> Triton datatype.
OUTPUTS = {
    "P_UNSAFE": "FP32",
    "VERDICT": "BYTES",
    "CATEGORIES": "BYTES",
    "PARSE_ERROR": "BOOL",
    "POLICY": "BYTES",
}
#: Every per-request error of the model starts with this.
INVALID_REQUEST = "invalid request: "
#: Environment variable naming the checkpoint of a version that carries none.
CHECKPOINT_ENV = "GUARDSTREAM_MODEL_CHECKPOINT"


class RequestRejected(InvalidInput):
    """The model answered this request with an error: the input is invalid."""


def rejection_of(server_message: str) -> RequestRejected | None:
    """The client-side error for a server error message, or None (server trouble)."""
    if INVALID_REQUEST not in server_message:
        return None
    return RequestRejected(server_message.split(INVALID_REQUEST, 1)[1])


@dataclass(frozen=True, slots=True)
class ClassifyRequest:
    """One turn to classify: the conversation up to it, its side, the policy ("" = default)."""

    turns: tuple[Turn, ...]
    side: Role
    policy_id: str = ""


@dataclass(frozen=True, slots=True)
class RawItem:
    """One item of a Triton request as the model receives it (undecoded bytes)."""

    conversation: bytes
    side: bytes
    policy_id: bytes


@dataclass(frozen=True, slots=True)
class ItemAnswer:
    """What the model answers for one item (decoded by the client into a Classification)."""

    p_unsafe: float
    unsafe: bool
    categories: tuple[CategoryRef, ...]
    parse_error: bool
    policy: PolicyRef


@dataclass(frozen=True, slots=True)
class Classification:
    """A served answer as the client returns it: the item's answer plus who gave it."""

    answer: ItemAnswer
    model_name: str
    model_version: str
    latency_ms: float


def verdict_word(unsafe: bool) -> bytes:
    return b"unsafe" if unsafe else b"safe"


def read_verdict(verdict: bytes, p_unsafe: float, parse_error: bool) -> tuple[bool, float, bool]:
    """``(unsafe, p_unsafe, parse_error)`` of a served answer, failing closed: only the
    exact word ``safe`` with a score in [0, 1] reads as safe. Any other verdict word or
    a NaN / out-of-range score is unsafe, scored 1.0 and marked a parse error."""
    ok_score = math.isfinite(p_unsafe) and 0.0 <= p_unsafe <= 1.0
    anomalous = verdict not in (b"safe", b"unsafe") or not ok_score
    unsafe = verdict != b"safe" or anomalous
    return unsafe, p_unsafe if ok_score else 1.0, parse_error or anomalous


def encode_categories(categories: Sequence[CategoryRef]) -> bytes:
    return orjson.dumps([{"code": c.code, "name": c.name} for c in categories])


def decode_categories(raw: bytes) -> tuple[CategoryRef, ...]:
    return tuple(CategoryRef(c["code"], c["name"]) for c in orjson.loads(raw))
