"""Shared fixtures: a real tokenizer, tiny models, free ports, a real tritonserver."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from guard.checkpoints import build_tiny_llama, save_llama3_tokenizer
from guard.prompt import PromptFormat

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "var" / "test-cache"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def llama3_tokenizer_dir() -> Path:
    """Llama 3's real tokenizer (Llama Guard 3's), converted from llama-models."""
    return save_llama3_tokenizer(CACHE / "llama3-tokenizer")


@pytest.fixture(scope="session")
def tiny_lg1(llama3_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random Llama whose first answer token is always safe/unsafe (LG1 format)."""
    return build_tiny_llama(
        tmp_path_factory.mktemp("tiny-lg1"),
        llama3_tokenizer_dir,
        seed=1,
        answer_only_head=PromptFormat.LG1,
    )


@pytest.fixture(scope="session")
def tiny_random(llama3_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny random Llama with an untouched head: it answers garbage."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-random"), llama3_tokenizer_dir, seed=2)


@pytest.fixture(scope="session")
def tiny_lg3(llama3_tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama Guard 3 as Meta ships one (its chat template, no guardstream manifest),
    trained in this session to follow the policy in its prompt (tests/tiny_guards.py)."""
    from tests.tiny_guards import train_tiny_lg3

    return train_tiny_lg3(tmp_path_factory.mktemp("tiny-lg3"), llama3_tokenizer_dir)


def serve_checkpoint(checkpoint: Path, work_dir: Path) -> tuple[Any, Any]:
    """A real tritonserver serving model_repo/ with ``checkpoint`` (not yet started),
    and its ports."""
    from stream_app.launchers.tritonserver import TritonPorts, triton_process

    ports = TritonPorts(free_port(), free_port(), free_port())
    proc = triton_process(
        ROOT / "model_repo",
        work_dir,
        ports,
        explicit_models=["guard"],
        env={"GUARDSTREAM_MODEL_CHECKPOINT": str(checkpoint)},
        timeout_s=240,
    )
    return proc, ports


@pytest.fixture(scope="session")
def triton_server(
    tiny_lg1: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, object]]:
    """The real tritonserver serving model_repo/ with the tiny LG1 model."""
    proc, ports = serve_checkpoint(tiny_lg1, tmp_path_factory.mktemp("triton"))
    with proc:
        yield {
            "proc": proc,
            "ports": ports,
            "grpc": f"127.0.0.1:{ports.grpc}",
            "checkpoint": tiny_lg1,
        }


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real Kafka-protocol broker (noida-db from PyPI) on a free port."""
    from stream_app.launchers.broker import broker_process

    port = free_port()
    with broker_process(tmp_path_factory.mktemp("broker"), port):
        yield f"127.0.0.1:{port}"
