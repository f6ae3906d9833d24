"""Tests against real services: the Kafka broker, the database."""
