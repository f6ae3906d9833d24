"""The schema as first released.

Registry (tps, personnel, device), tokens, escalation policy, ingest's seen events, and dispatch's
incidents, timeline, outbox and alert deliveries.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "alertdelivery",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("audience", sa.String(), nullable=False),
        sa.Column("reminder", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(), nullable=False),
        sa.Column("recipient", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index(op.f("ix_alertdelivery_incident_id"), "alertdelivery", ["incident_id"], unique=False)
    op.create_table(
        "apitoken",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_apitoken_token_hash"), "apitoken", ["token_hash"], unique=True)
    op.create_table(
        "device",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("personnel_id", sa.String(), nullable=True),
        sa.Column("token_hash", sa.String(), nullable=False),
        sa.Column("tps_ids", sa.JSON(), nullable=True),
        sa.Column("kecamatan", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_index(op.f("ix_device_token_hash"), "device", ["token_hash"], unique=True)
    op.create_table(
        "incident",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("tps_id", sa.String(), nullable=True),
        sa.Column("kecamatan", sa.String(), nullable=False),
        sa.Column("category", sa.String(), nullable=False),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("reports", sa.Integer(), nullable=False),
        sa.Column("report_ids", sa.JSON(), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("local_deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("escalate_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ack_deadline", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reminders", sa.Integer(), nullable=False),
        sa.Column("levels_alerted", sa.JSON(), nullable=True),
        sa.Column("stakeholders_told", sa.JSON(), nullable=True),
        sa.Column("facts", sa.JSON(), nullable=True),
        sa.Column("why", sa.JSON(), nullable=True),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("parent_id", sa.String(), nullable=True),
        sa.Column("children", sa.JSON(), nullable=True),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.String(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_incident_ack_deadline"), "incident", ["ack_deadline"], unique=False)
    op.create_index(op.f("ix_incident_escalate_at"), "incident", ["escalate_at"], unique=False)
    op.create_index(op.f("ix_incident_kecamatan"), "incident", ["kecamatan"], unique=False)
    op.create_index(op.f("ix_incident_parent_id"), "incident", ["parent_id"], unique=False)
    op.create_index(op.f("ix_incident_status"), "incident", ["status"], unique=False)
    op.create_index("ix_incident_tps_cat_status", "incident", ["tps_id", "category", "status"], unique=False)
    op.create_index(op.f("ix_incident_tps_id"), "incident", ["tps_id"], unique=False)
    op.create_table(
        "incidentreport",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_index(op.f("ix_incidentreport_incident_id"), "incidentreport", ["incident_id"], unique=False)
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("topic", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "personnel",
        sa.Column("personnel_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("unit", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("tps_ids", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(), nullable=True),
        sa.Column("battery", sa.Integer(), nullable=True),
        sa.Column("last_checkin_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("personnel_id"),
    )
    op.create_table(
        "policyversion",
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
    )
    op.create_table(
        "processedevent",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_table(
        "seenevent",
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("content_hash", sa.String(), nullable=False),
        sa.Column("device_id", sa.String(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id"),
    )
    op.create_table(
        "timelineentry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("incident_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("prev_hash", sa.String(), nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("incident_id", "seq"),
    )
    op.create_index(op.f("ix_timelineentry_incident_id"), "timelineentry", ["incident_id"], unique=False)
    op.create_table(
        "tps",
        sa.Column("tps_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("kecamatan", sa.String(), nullable=False),
        sa.Column("desa", sa.String(), nullable=False),
        sa.Column("lat", sa.Float(), nullable=True),
        sa.Column("lon", sa.Float(), nullable=True),
        sa.Column("rawan", sa.JSON(), nullable=True),
        sa.Column("phase", sa.String(), nullable=True),
        sa.Column("phase_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_checkin_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("silent", sa.Boolean(), nullable=False),
        sa.Column("assigned", sa.Integer(), nullable=False),
        sa.Column("checkins", sa.JSON(), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("tps_id"),
    )
    op.create_index(op.f("ix_tps_kecamatan"), "tps", ["kecamatan"], unique=False)


def downgrade() -> None:
    # Dropping a table drops its indexes.
    op.drop_table("tps")
    op.drop_table("timelineentry")
    op.drop_table("seenevent")
    op.drop_table("processedevent")
    op.drop_table("policyversion")
    op.drop_table("personnel")
    op.drop_table("outbox")
    op.drop_table("incidentreport")
    op.drop_table("incident")
    op.drop_table("device")
    op.drop_table("apitoken")
    op.drop_table("alertdelivery")
