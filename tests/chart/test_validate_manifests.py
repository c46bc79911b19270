"""The strict manifest validator used by scripts/check-chart.sh."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .chart_render import SCENARIOS, scenario_args

SCRIPT = Path(__file__).with_name("validate_manifests.py")

HPA_V2BETA2 = """\
apiVersion: autoscaling/v2beta2
kind: HorizontalPodAutoscaler
metadata: {name: old}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: app}
  minReplicas: 1
  maxReplicas: 2
"""

SERVICE_MONITOR = """\
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: app}
spec:
  selector: {matchLabels: {app: x}}
  endpoints: [{port: web, path: /metrics}]
"""

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data:
  GUARDSTREAM_WORKER__BATCH_SIZE: "32"
"""


def validate(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess[str]:
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text(text)
    cmd = [sys.executable, str(SCRIPT), *args, str(manifest)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_valid_manifest_passes(tmp_path):
    proc = validate(tmp_path, CONFIGMAP)
    assert proc.returncode == 0, proc.stderr
    assert "1/1 manifests valid" in proc.stdout


def test_unknown_kind_fails(tmp_path):
    # kubernetes-validate alone only warns here; autoscaling/v2beta2 is gone in 1.26+.
    proc = validate(tmp_path, CONFIGMAP + "---\n" + HPA_V2BETA2, "--kube-version", "1.30.0")
    assert proc.returncode == 1
    assert "HorizontalPodAutoscaler/old (autoscaling/v2beta2): no schema" in proc.stderr


def test_allow_listed_crd_group_passes(tmp_path):
    proc = validate(tmp_path, SERVICE_MONITOR)
    assert proc.returncode == 0, proc.stderr


def test_crd_group_fails_when_not_allow_listed(tmp_path):
    proc = validate(tmp_path, SERVICE_MONITOR, "--allow-group", "example.com")
    assert proc.returncode == 1
    assert "ServiceMonitor/app" in proc.stderr


def test_unknown_field_fails_in_strict_mode(tmp_path):
    proc = validate(tmp_path, CONFIGMAP.replace("\ndata:", "\ndatas:"))
    assert proc.returncode == 1
    assert "'datas' was unexpected" in proc.stderr


def test_non_string_configmap_value_fails(tmp_path):
    proc = validate(tmp_path, CONFIGMAP.replace('"32"', "32"))
    assert proc.returncode == 1
    assert "GUARDSTREAM_WORKER__BATCH_SIZE" in proc.stderr


def test_non_object_document_fails(tmp_path):
    proc = validate(tmp_path, "just a string\n")
    assert proc.returncode == 1


@pytest.mark.parametrize("scenario", ["default", *SCENARIOS])
def test_rendered_chart_is_valid(helm_template, tmp_path, scenario):
    rendered = helm_template(*scenario_args(scenario))
    assert rendered.returncode == 0, rendered.stderr
    count = sum(1 for d in yaml.safe_load_all(rendered.stdout) if d)
    proc = validate(tmp_path, rendered.stdout, "--kube-version", "1.30.0")
    assert proc.returncode == 0, proc.stderr
    assert f"{count}/{count} manifests valid" in proc.stdout
