"""Siaga: shared contracts and adapters (event schema, bus, database, settings, auth, clock)."""
