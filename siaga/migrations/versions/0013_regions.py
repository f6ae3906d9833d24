"""Regions (SPEC section 10): `kabupaten` and `provinsi` on TPS, incidents and silences; token scopes.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03 09:30:00.000000

Rows from before are left with empty regions: the next TPS import sets them (from its columns, or
from SIAGA_DEFAULT_KABUPATEN / SIAGA_DEFAULT_PROVINSI), and incidents opened after take their TPS's.
An empty region is in no scoped token's view (docs/spec-notes.md#regions-and-scoped-tokens-spec-10).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("tps", "incident")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(sa.Column("kabupaten", sa.String(), nullable=False, server_default=""))
            batch_op.add_column(sa.Column("provinsi", sa.String(), nullable=False, server_default=""))
            batch_op.create_index(batch_op.f(f"ix_{table}_kabupaten"), ["kabupaten"], unique=False)
            batch_op.create_index(batch_op.f(f"ix_{table}_provinsi"), ["provinsi"], unique=False)
    with op.batch_alter_table("apitoken") as batch_op:
        batch_op.add_column(sa.Column("scope", sa.JSON(), nullable=True))
    with op.batch_alter_table("silence") as batch_op:
        batch_op.add_column(sa.Column("provinsi", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("kabupaten", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("silence") as batch_op:
        batch_op.drop_column("kabupaten")
        batch_op.drop_column("provinsi")
    with op.batch_alter_table("apitoken") as batch_op:
        batch_op.drop_column("scope")
    for table in TABLES:
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_provinsi"))
            batch_op.drop_index(batch_op.f(f"ix_{table}_kabupaten"))
            batch_op.drop_column("provinsi")
            batch_op.drop_column("kabupaten")
