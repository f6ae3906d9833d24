#!/usr/bin/env bash
# Run the whole test suite. It installs what is missing, and the tests start the real Kafka broker
# (and PostgreSQL) they need themselves unless SIAGA_KAFKA_BOOTSTRAP is set.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
echo "==> lint"
.venv/bin/ruff check .
echo "==> tests"
exec .venv/bin/pytest -p no:cacheprovider "$@"
