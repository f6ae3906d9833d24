"""Kafka topic names: the bus contract between the services (SPEC section 3; models: siaga.contracts)."""

FIELD_EVENTS = "siaga.field-events"  # key: tps_id
INCIDENT_UPDATES = "siaga.incident-updates"  # key: incident id (or "tps:<id>"), compacted
ALERTS = "siaga.alerts"  # key: incident id
COMMANDS = "siaga.commands"  # key: kecamatan (provinsi/kabupaten/kecamatan)
FIELD_ORDERS = "siaga.field-orders"  # key: the target (tps:<id>, kecamatan:<key>, person:<id>, all)
REPLIES = "siaga.replies"  # key: the phone number a confirmation goes to (SMS or WhatsApp)
DEAD_LETTER = "siaga.dead-letter"  # key: the original key

ALL = (FIELD_EVENTS, INCIDENT_UPDATES, ALERTS, COMMANDS, FIELD_ORDERS, REPLIES, DEAD_LETTER)
