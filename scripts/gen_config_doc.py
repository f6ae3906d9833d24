"""Write docs/configuration.md from siaga/settings.py, so the documented variables are the real ones."""

from __future__ import annotations

import sys
from pathlib import Path

from siaga.settings import Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def render() -> str:
    lines = [
        "# Configuration",
        "",
        "Every setting is an environment variable `SIAGA_<NAME>` (read by `siaga/settings.py`; this page is",
        "generated from it by `python scripts/gen_config_doc.py`, and a test keeps the two in step).",
        "Unset, the system runs on one machine with the embedded defaults: the in-process bus and a",
        "SQLite file `siaga.db` in the working directory.",
        "",
        "| variable | default | what it does |",
        "|---|---|---|",
    ]
    for name, field in Settings.model_fields.items():
        default = "(unset)" if field.default is None else f"`{field.default}`"
        lines.append(f"| `SIAGA_{name.upper()}` | {default} | {field.description or ''} |")
    lines += [
        "",
        "The escalation policy (windows, timeouts, stakeholders, alert routing) is not configuration but",
        "data: `services/dispatch/data/policy.yaml`, replaced at run time with `PUT /v1/admin/policy` or",
        "by pointing `SIAGA_POLICY_FILE` at an edited copy (checked every few seconds; no restart).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    if "--check" in sys.argv:
        sys.exit(0 if DOC.read_text() == render() else 1)
    DOC.write_text(render())
