"""Alembic migrations of the Siaga schema, shipped inside the package and configured in code (no alembic.ini).

`siaga.db` runs them at every service start; `python -m siaga.migrations` is Alembic's command line
with this configuration, for writing new revisions (see docs/migrations.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.types import TypeDecorator

MIGRATIONS_DIR = Path(__file__).resolve().parent


def make_config(*, connection: Connection | None = None, url: str | None = None, **config_kwargs: Any) -> Config:
    """An Alembic configuration for these migrations, bound to a connection (preferred) or a URL.

    `config_kwargs` go to `alembic.config.Config` (the command line passes `cmd_opts`, tests `stdout`).
    """
    cfg = Config(**config_kwargs)
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    # The revision id first, so the files sort in the order they apply (0001_initial.py, 0002_...).
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if url is not None:
        # Kept in `attributes`, not the ini options: ConfigParser would treat a `%` in a password as interpolation.
        cfg.attributes["url"] = url
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Render SQLModel's own column types (`AutoString`, `UTCDateTime`) as the SQLAlchemy type they wrap.

    A revision is frozen history: it must not depend on sqlmodel internals that may change or disappear.
    """
    if type_ == "type" and isinstance(obj, TypeDecorator) and type(obj).__module__.startswith("sqlmodel"):
        return f"sa.{obj.impl!r}"
    return False


def context_options(dialect_name: str) -> dict[str, Any]:
    """Options for `context.configure` shared by env.py and the schema comparison in `siaga.db`."""
    return {
        "compare_type": True,
        "render_item": render_item,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        "render_as_batch": dialect_name == "sqlite",
    }
