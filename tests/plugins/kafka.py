"""The real Kafka broker for the tests: SIAGA_KAFKA_BOOTSTRAP if set, else one started here.

One broker per test session (infra/kafka/broker.sh on a free port, its own data dir),
stopped and its data dir removed at the end. The first run fetches the Kafka jars with
Maven into ~/.cache/siaga (see docs/kafka.md); later runs start in a few seconds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.plugins.ports import free_port as _free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """host:port of a running broker."""
    configured = os.environ.get("SIAGA_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    port = _free_port()
    home = tempfile.mkdtemp(prefix="siaga-test-kafka-")
    env = dict(os.environ, SIAGA_KAFKA_PORT=str(port), SIAGA_KAFKA_HOME=home)
    script = ROOT / "infra" / "kafka" / "broker.sh"
    subprocess.run(["bash", str(script), "start"], env=env, check=True, timeout=600)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(["bash", str(script), "stop"], env=env, check=False, timeout=120)
        shutil.rmtree(home, ignore_errors=True)
