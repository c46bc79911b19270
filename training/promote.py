"""The Triton model repository: versions, atomic promotion, rollback, reload.

A version is ``model_repo/<model>/<n>/`` holding ``model.py`` and, for versions
written here, the fine-tuned weights in ``checkpoint/``. New versions are
assembled in a dot-directory (ignored by Triton, which only reads numeric
names) and renamed into place in one step. Rolled-back versions move to
``model_repo/.archive/``. Triton runs in explicit model-control mode: a load
request makes it serve the newest version (``version_policy: latest 1``). Every
replica must get that request (:func:`reload_replicas`): the retrain job reaches them all
through a headless Service, whose name resolves to each replica's address.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from guard.loaders import MANIFEST
from guard.protocol import CHECKPOINT_ENV

log = logging.getLogger(__name__)

# Header key of the model-control key when Triton restricts its model-repository API
# (--grpc-restricted-protocol / --http-restricted-api, as the Helm chart runs it). Over
# gRPC, Triton expects it with the "triton-grpc-protocol-" prefix.
MODEL_CONTROL_HEADER = "guardstream-model-control"


def versions(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def serving_version(model_dir: Path) -> int:
    found = versions(model_dir)
    if not found:
        raise FileNotFoundError(f"{model_dir} has no numbered version")
    return found[-1]


def checkpoint_of(model_dir: Path, version: int, default: Path | None = None) -> Path:
    """Where version ``version`` loads its weights from (as the Triton model does): its
    own ``checkpoint/``, else ``$GUARDSTREAM_MODEL_CHECKPOINT``, else ``default`` (the
    ``checkpoint`` parameter, or the shipped model a local run serves)."""
    own = model_dir / str(version) / "checkpoint"
    if own.is_dir():
        return own
    env = os.environ.get(CHECKPOINT_ENV)
    if env and Path(env).is_dir():
        return Path(env)
    if default is not None and default.is_dir():
        return default
    raise FileNotFoundError(
        f"version {version} has no checkpoint/ directory, ${CHECKPOINT_ENV} is unset"
        + (f" and {default} is not a directory" if default is not None else "")
    )


def archived_versions(model_dir: Path) -> list[int]:
    """Version numbers of ``model_dir``'s rolled-back versions (in ``.archive/``)."""
    archive = model_dir.parent / ".archive"
    if not archive.is_dir():
        return []
    prefix = f"{model_dir.name}-"
    found = []
    for p in archive.iterdir():
        number = p.name[len(prefix) :].split("-", 1)[0]
        if p.name.startswith(prefix) and number.isdigit():
            found.append(int(number))
    return sorted(found)


def promote(model_dir: Path, candidate: Path) -> int:
    """Copy ``candidate`` in as the next version, atomically; return its number.

    Numbers are never reused: the next one is above every version ever served,
    rolled-back ones included, so a version number (and so a verdict id, which
    includes it) always names the same weights.
    """
    current = serving_version(model_dir)
    new = max([current, *archived_versions(model_dir)]) + 1
    staging = model_dir / f".incoming-{new}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    shutil.copy2(model_dir / str(current) / "model.py", staging / "model.py")
    shutil.copytree(candidate, staging / "checkpoint")
    os.rename(staging, model_dir / str(new))  # fails if the number was taken meanwhile
    log.info("promoted %s as version %d", candidate, new)
    return new


def rollback(model_dir: Path, to: int | None = None) -> list[int]:
    """Archive the newest version (or every version above ``to``); return them."""
    found = versions(model_dir)
    if len(found) < 2:
        raise ValueError("nothing to roll back to: only one version")
    target = found[-2] if to is None else to
    if target not in found:
        raise ValueError(f"version {target} does not exist (have {found})")
    archive = model_dir.parent / ".archive"
    archive.mkdir(exist_ok=True)
    moved = []
    for v in found:
        if v > target:
            os.rename(model_dir / str(v), archive / f"{model_dir.name}-{v}-{int(time.time())}")
            moved.append(v)
    return moved


def model_control_headers(key: SecretStr | str | None) -> dict[str, str]:
    """gRPC headers of a model-repository request: the model-control key, when one is set."""
    value = key.get_secret_value() if isinstance(key, SecretStr) else key
    return {f"triton-grpc-protocol-{MODEL_CONTROL_HEADER}": value} if value else {}


def reload_model(
    triton_url: str,
    model_name: str,
    timeout_s: float = 300.0,
    control_key: SecretStr | str | None = None,
) -> list[str]:
    """Ask Triton (explicit mode) to load the model again; return its ready versions.

    ``control_key`` (``triton.model_control_key``) is sent in the header that a
    restricted model-repository API checks; without one no header is sent.
    """
    import tritonclient.grpc as grpcclient

    headers = model_control_headers(control_key)
    client = grpcclient.InferenceServerClient(triton_url)
    try:
        client.load_model(model_name, headers=headers, client_timeout=timeout_s)
        index = client.get_model_repository_index(headers=headers, as_json=True).get("models", [])
        return [
            m.get("version", "")
            for m in index
            if m.get("name") == model_name and m.get("state") == "READY"
        ]
    finally:
        client.close()


def replica_addresses(
    urls: Sequence[str], resolve: Callable[..., list[Any]] = socket.getaddrinfo
) -> list[str]:
    """Every ``host:port`` behind ``urls``, in order, once each: a host name that resolves
    to several addresses (a Kubernetes headless Service) stands for each of them."""
    found: list[str] = []
    for url in urls:
        host, sep, port = url.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"{url!r} is not host:port")
        host = host.strip("[]")
        infos = resolve(host, int(port), type=socket.SOCK_STREAM)
        # A dual-stack name gives each replica an IPv4 and an IPv6 address: one is enough.
        if any(f == socket.AF_INET for f, *_ in infos):
            infos = [i for i in infos if i[0] == socket.AF_INET]
        for family, _, _, _, sockaddr in infos:
            address = f"[{sockaddr[0]}]" if family == socket.AF_INET6 else sockaddr[0]
            target = f"{address}:{port}"
            if target not in found:
                found.append(target)
    return found


def reload_replicas(
    urls: Sequence[str],
    model_name: str,
    control_key: SecretStr | str | None = None,
    timeout_s: float = 300.0,
) -> dict[str, list[str] | str]:
    """Ask every replica behind ``urls`` (:func:`replica_addresses`) to load the model
    again; per replica, its ready versions, or the error that stopped it (a name that
    does not resolve is one such error). A replica that misses the request serves its
    old version until the next reload or restart (``--load-model`` loads the newest)."""
    results: dict[str, list[str] | str] = {}
    for url in urls:
        try:
            targets = replica_addresses([url])
        except (OSError, ValueError) as exc:
            results[url] = f"cannot resolve: {exc}"
            continue
        for target in targets:
            try:
                results[target] = reload_model(target, model_name, timeout_s, control_key)
            except Exception as exc:  # reported per replica; the others still get theirs
                results[target] = f"{type(exc).__name__}: {exc}"
    return results


def failed_replicas(
    results: dict[str, list[str] | str], expected: int | None = None
) -> dict[str, str]:
    """The replicas of a :func:`reload_replicas` result that did not load the model (or,
    with ``expected``, do not serve that version: a stale copy of the repository)."""
    failed = {}
    for url, r in results.items():
        if isinstance(r, str):
            failed[url] = r
        elif not r:
            failed[url] = "no version is ready"
        elif expected is not None and str(expected) not in r:
            failed[url] = f"serves versions {r}, not {expected}"
    return failed


# -- Human approval ------------------------------------------------------------------
#
# With ``training.require_approval``, a candidate that passes the gate is staged in
# ``<repository>/.candidates/<model>-<id>/`` (``checkpoint/`` and the run's ``report.json``;
# Triton ignores dot-directories) until someone runs ``guardstream promote --approve ID``.


def _candidates_dir(model_dir: Path) -> Path:
    return model_dir.parent / ".candidates"


_CANDIDATE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _candidate(model_dir: Path, cid: str) -> Path:
    """The directory of staged candidate ``cid``; ``ValueError`` for any id that is not
    one (a path, ``..``), so that approving or rejecting touches nothing else."""
    root = _candidates_dir(model_dir)
    path = root / cid
    if (
        not _CANDIDATE_ID.fullmatch(cid)
        or not cid.startswith(f"{model_dir.name}-")
        or path.resolve().parent != root.resolve()
        or not (path / "report.json").is_file()
    ):
        raise ValueError(
            f"no staged candidate {cid!r} (have {sorted(staged(model_dir)) or 'none'})"
        )
    return path


def stage(model_dir: Path, candidate: Path, report: dict[str, Any], run_id: str) -> str:
    """Keep a gated candidate for approval; return its id."""
    cid = f"{model_dir.name}-{run_id}"
    final = _candidates_dir(model_dir) / cid
    if final.exists():
        shutil.rmtree(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{cid}.", dir=final.parent))
    shutil.copytree(candidate, tmp / "checkpoint")
    (tmp / "report.json").write_text(json.dumps(report, indent=2, default=str))
    os.rename(tmp, final)
    return cid


def staged(model_dir: Path) -> dict[str, dict[str, Any]]:
    """Candidates awaiting approval: id -> their run's report."""
    root = _candidates_dir(model_dir)
    if not root.is_dir():
        return {}
    return {
        p.name: json.loads((p / "report.json").read_text())
        for p in sorted(root.iterdir())
        if p.name.startswith(f"{model_dir.name}-") and (p / "report.json").is_file()
    }


def approve(model_dir: Path, cid: str, approver: str) -> int:
    """Promote staged candidate ``cid``, recording who approved it; return its version.

    Refused (``ValueError``) when the serving version is no longer the one the candidate
    was gated against: it would replace a version nobody compared it with.
    """
    path = _candidate(model_dir, cid)
    gated_against = int(json.loads((path / "report.json").read_text())["serving_version"])
    now = serving_version(model_dir)
    if now != gated_against:
        raise ValueError(
            f"{cid} was gated against version {gated_against}, but version {now} serves now:"
            " retrain to gate a candidate against it"
        )
    manifest_path = path / "checkpoint" / MANIFEST
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest.setdefault("kind", "causal-lm")
    manifest["approved"] = {
        "by": approver,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    version = promote(model_dir, path / "checkpoint")
    shutil.rmtree(path)
    return version


def reject(model_dir: Path, cid: str) -> None:
    shutil.rmtree(_candidate(model_dir, cid))
