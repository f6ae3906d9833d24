"""Test setup: services the tests need (Kafka broker, PostgreSQL) are started here, not by hand."""

pytest_plugins = ["tests.plugins.browser", "tests.plugins.kafka", "tests.plugins.postgres", "tests.plugins.system"]
