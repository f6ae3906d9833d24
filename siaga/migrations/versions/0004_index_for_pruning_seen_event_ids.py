"""An index on seenevent.received_at, for pruning the ids too old to matter.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 11:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("seenevent", schema=None) as batch_op:
        batch_op.create_index("ix_seenevent_received_at", ["received_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("seenevent", schema=None) as batch_op:
        batch_op.drop_index("ix_seenevent_received_at")
