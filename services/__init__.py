"""The three Siaga services: ingest, dispatch, dashboard. A service never imports another."""
