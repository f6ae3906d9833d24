#!/usr/bin/env bash
# Install what Siaga needs, from nothing, idempotently: Debian packages (only with --test:
# chromium for the browser tests, postgresql for the PostgreSQL tests), a virtualenv in .venv
# with the project and its test tools, and the Kafka jars (cached under ~/.cache/siaga).
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

if [ "$want_test" = 1 ]; then
  missing=()
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v caddy >/dev/null 2>&1 || missing+=(caddy)
  command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${missing[@]}"
  fi
fi

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import siaga, fastapi, aiokafka" >/dev/null 2>&1 || [ "$want_test" = 1 ]; then
  echo "==> installing Python packages"
  .venv/bin/pip install -q --upgrade pip
  if [ "$want_test" = 1 ]; then
    .venv/bin/pip install -q -e '.[test]'
  else
    .venv/bin/pip install -q -e .
  fi
fi

if [ "$want_test" = 1 ]; then
  echo "==> Kafka jars"
  bash infra/kafka/broker.sh fetch
fi
