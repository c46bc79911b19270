"""Fixtures for the chart tests: render charts/guardstream with the pinned helm binary.

No cluster is involved: ``helm template`` renders the manifests and the tests assert on
the parsed YAML. A missing helm binary is a failure, never a skip.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from .chart_render import CHART, KUBE_VERSION, NAMESPACE, RELEASE, ROOT, Manifests, scenario_args


@pytest.fixture(scope="session")
def helm() -> Path:
    path = ROOT / ".tools" / "helm"
    if not path.is_file():
        pytest.fail(f"helm not found at {path}: run `bash scripts/install-helm.sh`", pytrace=False)
    return path


@pytest.fixture(scope="session")
def helm_template(helm: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Runs `helm template` with extra arguments; returns the completed process."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [
            str(helm),
            "template",
            RELEASE,
            str(CHART),
            "--namespace",
            NAMESPACE,
            "--kube-version",
            KUBE_VERSION,
            "--api-versions",
            "monitoring.coreos.com/v1",
            *args,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)

    return run


@pytest.fixture(scope="session")
def render(
    helm_template: Callable[..., subprocess.CompletedProcess[str]],
) -> Callable[..., Manifests]:
    """Renders the chart (scenario name plus extra helm arguments) into parsed manifests."""
    cache: dict[tuple[str, ...], Manifests] = {}

    def run(scenario: str = "default", *extra: str) -> Manifests:
        key = (scenario, *extra)
        if key not in cache:
            proc = helm_template(*scenario_args(scenario), *extra)
            assert proc.returncode == 0, f"helm template failed:\n{proc.stderr}"
            cache[key] = [d for d in yaml.safe_load_all(proc.stdout) if d]
        return cache[key]

    return run
