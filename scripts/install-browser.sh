#!/usr/bin/env bash
# Debian's Chromium for the review console's browser tests (Playwright drives it; its
# own browser download cannot run here). Idempotent: nothing to do when it is there.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "[setup] chromium is missing: run 'apt-get install chromium' as root" >&2
    exit 1
fi
echo "[setup] installing Debian's chromium (about 30 s)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium >/dev/null
command -v chromium >/dev/null
