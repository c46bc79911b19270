"""The real ``tritonserver`` from the nvidia-pytriton wheel, started locally.

Production runs NVIDIA's Triton image against the same ``model_repo/``; this
launcher is for local runs and tests on a machine without Docker. What it
arranges (each part was needed; docs/model-serving.md, "The local
tritonserver"): a backend directory with the python backend and the stub for
this interpreter's Python, the venv's libpython and the wheel's bundled
libraries on ``LD_LIBRARY_PATH``, the venv's ``bin`` first on ``PATH`` (the
stub finds its site-packages from it), and a working directory of our own.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stream_app.launchers.process import ManagedProcess, StartupError


@dataclass(frozen=True)
class TritonPorts:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def _pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError as exc:  # pragma: no cover - install problem
        raise StartupError("nvidia-pytriton is not installed: run scripts/setup.sh") from exc
    return Path(pytriton.__file__).parent / "tritonserver"


def prepare_backends(work_dir: Path) -> Path:
    """A ``--backend-directory`` with the python backend and this Python's stub."""
    src = _pytriton_dir()
    dest = work_dir / "backends" / "python"
    dest.mkdir(parents=True, exist_ok=True)
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    files = [
        src / "backends" / "python" / "libtriton_python.so",
        src / "backends" / "python" / "triton_python_backend_utils.py",
        src / "python_backend_stubs" / py / "triton_python_backend_stub",
    ]
    for f in files:
        if not f.exists():
            raise StartupError(f"tritonserver wheel lacks {f}")
        target = dest / f.name
        if not target.exists() or target.stat().st_size != f.stat().st_size:
            shutil.copy2(f, target)
    return work_dir / "backends"


def server_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    venv_bin = Path(sys.executable).parent
    libs = [
        sysconfig.get_config_var("LIBDIR") or "",
        str(_pytriton_dir().parent.parent / "nvidia_pytriton.libs"),
    ]
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    env.update(extra or {})
    return env


def http_ready(port: int, path: str = "/v2/health/ready") -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def triton_process(
    model_repository: Path,
    work_dir: Path,
    ports: TritonPorts = TritonPorts(),
    *,
    explicit_models: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 180.0,
    exit_timeout_s: int = 5,
    extra_args: Sequence[str] = (),
) -> ManagedProcess:
    """A ready-checked tritonserver serving ``model_repository``.

    With ``explicit_models`` the server runs in explicit model-control mode and
    loads just those (new versions are loaded through the repository API).
    ``extra_args`` go to tritonserver as they are (for example the restricted-API
    flags the Helm chart sets).
    """
    binary = _pytriton_dir() / "bin" / "tritonserver"
    work_dir.mkdir(parents=True, exist_ok=True)
    backends = prepare_backends(work_dir)
    argv = [
        str(binary),
        f"--model-repository={model_repository.resolve()}",
        f"--backend-directory={backends.resolve()}",
        "--http-address=127.0.0.1",
        "--grpc-address=127.0.0.1",
        "--metrics-address=127.0.0.1",
        f"--http-port={ports.http}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-port={ports.metrics}",
        f"--exit-timeout-secs={exit_timeout_s}",
        "--allow-gpu-metrics=false",
        "--pinned-memory-pool-byte-size=0",
        "--cuda-memory-pool-byte-size=0:0",
        f"--cache-directory={_pytriton_dir() / 'caches'}",
        "--strict-readiness=true",
        "--log-verbose=0",
    ]
    if explicit_models is not None:
        argv.append("--model-control-mode=explicit")
        argv += [f"--load-model={m}" for m in explicit_models]
    argv += list(extra_args)
    return ManagedProcess(
        "tritonserver",
        argv,
        ready=lambda: http_ready(ports.http),
        log_path=work_dir / "tritonserver.log",
        env=server_env(env),
        cwd=work_dir,
        timeout_s=timeout_s,
    )
