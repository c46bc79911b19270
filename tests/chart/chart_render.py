"""Chart paths, scenarios and values shared by the chart tests and their fixtures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "guardstream"
SCENARIOS = sorted(p.stem for p in (CHART / "ci").glob("*.yaml"))
KUBE_VERSION = "1.30.0"
NAMESPACE = "guardstream"
RELEASE = "gs"

Manifests = list[dict[str, Any]]


def scenario_args(scenario: str) -> list[str]:
    """helm arguments of a scenario: "default" or the stem of a charts/guardstream/ci file."""
    return [] if scenario == "default" else ["-f", str(CHART / "ci" / f"{scenario}.yaml")]


def scenario_values(scenario: str) -> dict[str, Any]:
    """The chart's values for a scenario (defaults merged with the scenario file)."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if scenario != "default":
        _merge(values, yaml.safe_load((CHART / "ci" / f"{scenario}.yaml").read_text()))
    return values


def _merge(base: dict[str, Any], override: dict[str, Any]) -> None:
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
