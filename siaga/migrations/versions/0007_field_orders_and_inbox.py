"""Field orders and the device inbox (SPEC section 9): the inbox table, orders on incidents, check-in locations.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 23:45:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "inboxitem",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(length=128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("target_key", sa.String(length=300), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=True),
        sa.Column("kecamatan", sa.String(), nullable=True),
        sa.Column("body", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    with op.batch_alter_table("inboxitem", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_inboxitem_item_id"), ["item_id"], unique=False)
        batch_op.create_index("ix_inboxitem_target_seq", ["target_key", "seq"], unique=False)
    with op.batch_alter_table("personnel") as batch_op:
        batch_op.add_column(sa.Column("lat", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("lon", sa.Float(), nullable=True))
    with op.batch_alter_table("incident") as batch_op:
        batch_op.add_column(sa.Column("orders", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("incident") as batch_op:
        batch_op.drop_column("orders")
    with op.batch_alter_table("personnel") as batch_op:
        batch_op.drop_column("lon")
        batch_op.drop_column("lat")
    with op.batch_alter_table("inboxitem", schema=None) as batch_op:
        batch_op.drop_index("ix_inboxitem_target_seq")
        batch_op.drop_index(batch_op.f("ix_inboxitem_item_id"))
    op.drop_table("inboxitem")
