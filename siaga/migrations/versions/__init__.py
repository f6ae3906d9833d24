"""The revisions, one file each, named `<rev>_<slug>.py`; Alembic skips this file."""
