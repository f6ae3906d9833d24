"""Kafka topic names: the bus contract between the services (SPEC section 3)."""

FIELD_EVENTS = "siaga.field-events"  # key: tps_id
INCIDENT_UPDATES = "siaga.incident-updates"  # key: incident id (or "tps:<id>"), compacted
ALERTS = "siaga.alerts"  # key: incident id
DEAD_LETTER = "siaga.dead-letter"  # key: the original key

ALL = (FIELD_EVENTS, INCIDENT_UPDATES, ALERTS, DEAD_LETTER)
