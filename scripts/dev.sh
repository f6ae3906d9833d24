#!/usr/bin/env bash
# Run the whole of Siaga on this machine with the embedded defaults and the Serang demo:
# the dashboard is on http://127.0.0.1:8000 (the link with a token is printed at start).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/siaga dev "$@"
