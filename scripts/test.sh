#!/usr/bin/env bash
# The whole test suite, from a fresh clone: set-up, lint, types, chart checks,
# then every pytest test (unit + integration against the real broker and the
# real tritonserver). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/install-browser.sh  # the console's browser tests
echo "== ruff" && .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy" && .venv/bin/mypy
echo "== chart" && bash scripts/check-chart.sh
echo "== pytest"
# pytest exits 5 when no test ran: with set -e that fails the run, as it must.
.venv/bin/python -m pytest tests --ignore=tests/chart -q -rs "$@"
