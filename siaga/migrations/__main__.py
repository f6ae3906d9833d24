"""Alembic's command line with Siaga's configuration: `python -m siaga.migrations revision --autogenerate -m "..."`.

Every Alembic command works (`history`, `current`, `upgrade`, `downgrade`, `stamp`, `check`, ...) against
`--url`, or else SIAGA_DATABASE_URL. `revision --autogenerate` without `--url` compares the models with
a scratch SQLite database upgraded to the newest revision, so no real database is needed to write one.
New revisions are numbered on from the newest (0003, 0004, ...) unless `--rev-id` says otherwise, and
formatted with ruff.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from alembic import command
from alembic.config import CommandLine, Config
from alembic.script import ScriptDirectory

from siaga.migrations import make_config


def next_revision_id(cfg: Config) -> str:
    """The number after the highest numeric revision id, four digits wide."""
    numbers = [int(s.revision) for s in ScriptDirectory.from_config(cfg).walk_revisions() if s.revision.isdigit()]
    return f"{max(numbers, default=0) + 1:04d}"


def _format_with_ruff(cfg: Config) -> None:
    cfg.set_section_option("post_write_hooks", "hooks", "ruff_format")
    cfg.set_section_option("post_write_hooks", "ruff_format.type", "module")
    cfg.set_section_option("post_write_hooks", "ruff_format.module", "ruff")
    cfg.set_section_option("post_write_hooks", "ruff_format.options", "format REVISION_SCRIPT_FILENAME")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse Alembic's arguments (plus `--url`), build the configuration in code and run the command."""
    # What alembic.ini's logging section would give: the steps as they run.
    logging.basicConfig(level=logging.INFO, format="%(levelname)-5.5s [%(name)s] %(message)s")
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    cli = CommandLine(prog="python -m siaga.migrations")
    cli.parser.add_argument("--url", help="SQLAlchemy URL of the database (default: SIAGA_DATABASE_URL)")
    options = cli.parser.parse_args(argv)
    if not hasattr(options, "cmd"):
        cli.parser.error("too few arguments")
    fn = options.cmd[0]
    scratch = fn is command.revision and getattr(options, "autogenerate", False) and not options.url
    with tempfile.TemporaryDirectory(prefix="siaga-migrations-") as tmp:
        if scratch:
            url = f"sqlite:///{Path(tmp) / 'scratch.db'}"
        elif options.url:
            url = options.url
        else:
            from siaga.settings import get_settings

            url = get_settings().database_url
        cfg = make_config(url=url, cmd_opts=options)
        if fn is command.revision:
            if importlib.util.find_spec("ruff") is not None:  # a development tool: absent where Siaga runs
                _format_with_ruff(cfg)
            if not options.rev_id:
                options.rev_id = next_revision_id(cfg)
        if scratch:
            command.upgrade(make_config(url=url), "head")
        cli.run_cmd(cfg, options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
