#!/usr/bin/env bash
# Offline checks of charts/guardstream (no cluster needed):
#   1. helm lint --strict, for the default values and every charts/guardstream/ci/*.yaml;
#   2. helm template of each at Kubernetes 1.30, validated strictly against the official
#      schemas (tests/chart/validate_manifests.py: a kind without a schema fails unless its
#      API group is allow-listed, e.g. monitoring.coreos.com);
#   3. values that must fail rendering (replicas beyond the input topic's partitions);
#   4. the pytest chart tests (tests/chart).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-helm.sh
HELM=.tools/helm
PY=${PYTHON:-.venv/bin/python}
CHART=charts/guardstream
KUBE_VERSION=1.30.0
# The chart renders ServiceMonitors only when asked to; the API is declared for all.
TEMPLATE_ARGS=(--namespace guardstream --kube-version "$KUBE_VERSION" --api-versions monitoring.coreos.com/v1)

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

scenarios=(default "$CHART"/ci/*.yaml)
for scenario in "${scenarios[@]}"; do
    if [[ "$scenario" == default ]]; then
        name=default; values=()
    else
        name=$(basename "$scenario" .yaml); values=(-f "$scenario")
    fi
    echo "== scenario $name"
    "$HELM" lint --strict --quiet --kube-version "$KUBE_VERSION" "$CHART" "${values[@]}"
    "$HELM" template guardstream "$CHART" "${values[@]}" "${TEMPLATE_ARGS[@]}" >"$out/$name.yaml"
    "$PY" tests/chart/validate_manifests.py --kube-version "$KUBE_VERSION" "$out/$name.yaml"
done

# expect_failure DESCRIPTION EXPECTED_MESSAGE HELM_ARGS...: rendering must fail with the message.
expect_failure() {
    local what=$1 message=$2
    shift 2
    if "$HELM" template guardstream "$CHART" "${TEMPLATE_ARGS[@]}" "$@" >/dev/null 2>"$out/err"; then
        echo "FAIL: rendering succeeded with $what" >&2
        exit 1
    fi
    if ! grep -qF -- "$message" "$out/err"; then
        echo "FAIL: $what failed without the expected message '$message':" >&2
        cat "$out/err" >&2
        exit 1
    fi
    echo "ok: $what fails rendering"
}
echo "== scenarios that must fail"
expect_failure "replicas > partitions" "must not exceed kafka.topics.partitions" \
    --set kafka.topics.partitions=4 --set streamApp.replicas=5
expect_failure "HPA maxReplicas > partitions" "must not exceed kafka.topics.partitions" \
    --set kafka.topics.partitions=4 --set streamApp.autoscaling.enabled=true \
    --set streamApp.autoscaling.maxReplicas=5
expect_failure "an unknown value" "Additional property" --set streamApp.replica=1

echo "== pytest tests/chart"
"$PY" -m pytest tests/chart -q
