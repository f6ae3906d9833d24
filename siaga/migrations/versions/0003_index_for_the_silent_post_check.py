"""An index for the silent-post check, which runs every second over every TPS.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 06:26:42.526297
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tps", schema=None) as batch_op:
        batch_op.create_index("ix_tps_silence", ["phase", "silent", "last_seen_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("tps", schema=None) as batch_op:
        batch_op.drop_index("ix_tps_silence")
