#!/usr/bin/env bash
# Run the whole test suite. It installs what is missing, and the tests start the real Kafka broker
# (and PostgreSQL) they need themselves unless SIAGA_KAFKA_BOOTSTRAP is set.
# Extra arguments go to pytest (e.g. scripts/test.sh tests/unit -x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
echo "==> lint"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "==> types (mypy strict, as pyproject.toml configures it)"
.venv/bin/mypy
echo "==> tests"
# -rs lists every skip with its reason; under CI=true a skip fails the run (tests/conftest.py).
# Two workers (pytest-xdist), a test file each at a time: most tests wait on a broker, a database
# or a browser rather than on the CPU, so two in parallel take ~2/3 of the time on the two cores.
# Each worker starts its own broker and PostgreSQL. SIAGA_TEST_WORKERS=0 runs in one process.
exec .venv/bin/pytest -p no:cacheprovider -rs -n "${SIAGA_TEST_WORKERS:-2}" --dist loadfile "$@"
