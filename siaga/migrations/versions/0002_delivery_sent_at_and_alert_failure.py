"""When an alert delivery was sent, and an incident's last alert failure (shown on the dashboard).

Deliveries already `sent` before this revision get `updated_at` as their `sent_at`: the status
became final at that write, so it is the best time there is.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("alertdelivery") as batch_op:
        batch_op.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("incident") as batch_op:
        batch_op.add_column(sa.Column("last_alert_failure", sa.String(), nullable=True))
    op.execute("UPDATE alertdelivery SET sent_at = updated_at WHERE status = 'sent' AND sent_at IS NULL")


def downgrade() -> None:
    with op.batch_alter_table("incident") as batch_op:
        batch_op.drop_column("last_alert_failure")
    with op.batch_alter_table("alertdelivery") as batch_op:
        batch_op.drop_column("sent_at")
