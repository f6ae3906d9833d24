"""Test setup: services the tests need (Kafka broker, PostgreSQL) are started here, not by hand.

Under CI (`CI=true`) a skipped test is a failed one: a test that needs Kafka, PostgreSQL or
Chromium must never turn green by not running because the part was missing.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

pytest_plugins = ["tests.plugins.browser", "tests.plugins.kafka", "tests.plugins.postgres", "tests.plugins.system"]


def skips_fail() -> bool:
    """Whether a skip counts as a failure here: under CI, or when SIAGA_TEST_NO_SKIP=1 asks for it."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("SIAGA_TEST_NO_SKIP") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and skips_fail():
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI, which counts as a failure: {reason}"
