"""Under CI a skip is a failure (tests/conftest.py): a missing broker, database or browser cannot pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SKIPPING = """
import pytest

def test_needs_a_part():
    pytest.skip("the part is not installed")

def test_runs():
    assert 1 + 1 == 2
"""


def run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    clean = {k: v for k, v in os.environ.items() if k not in ("CI", "SIAGA_TEST_NO_SKIP")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider", "-q", "-rs", str(tmp_path)],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("env", [{"CI": "true"}, {"SIAGA_TEST_NO_SKIP": "1"}])
def test_a_skip_fails_under_ci(tmp_path: Path, env: dict[str, str]) -> None:
    r = run(tmp_path, **env)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "1 failed, 1 passed" in r.stdout
    assert "the part is not installed" in r.stdout


def test_a_skip_is_a_skip_outside_ci(tmp_path: Path) -> None:
    r = run(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 1 skipped" in r.stdout
