"""contacts data quality

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 15:43:48.744039
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nurture.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "custom_fields",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=40), nullable=False),
        sa.Column("label", sa.String(length=100), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "text",
                "number",
                "date",
                "choice",
                name="custom_field_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("choices", sa.JSON(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("created_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custom_fields")),
        sa.UniqueConstraint("key", name=op.f("uq_custom_fields_key")),
    )
    op.create_table(
        "import_jobs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "contacts",
                "events",
                name="import_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column(
            "state",
            sa.Enum(
                "queued",
                "running",
                "done",
                "failed",
                name="import_state",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("mapping", sa.JSON(), nullable=True),
        sa.Column(
            "created_by_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("started_at", nurture.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("finished_at", nurture.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("rows_total", sa.Integer(), nullable=False),
        sa.Column("rows_done", sa.Integer(), nullable=False),
        sa.Column("created", sa.Integer(), nullable=False),
        sa.Column("updated", sa.Integer(), nullable=False),
        sa.Column("unchanged", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("errors_csv", sa.Text(), nullable=False),
        sa.Column("problem", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_import_jobs_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_jobs")),
    )
    with op.batch_alter_table("import_jobs", schema=None) as batch_op:
        batch_op.create_index("ix_import_jobs_state_id", ["state", "id"], unique=False)

    op.create_table(
        "segments",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        sa.Column(
            "created_by_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("created_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_segments_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("name", name=op.f("uq_segments_name")),
    )
    op.create_table(
        "duplicate_dismissals",
        sa.Column("low_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("high_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "dismissed_by_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("dismissed_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dismissed_by_id"],
            ["users.id"],
            name=op.f("fk_duplicate_dismissals_dismissed_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["high_id"],
            ["contacts.id"],
            name=op.f("fk_duplicate_dismissals_high_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["low_id"],
            ["contacts.id"],
            name=op.f("fk_duplicate_dismissals_low_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("low_id", "high_id", name=op.f("pk_duplicate_dismissals")),
    )
    with op.batch_alter_table("duplicate_dismissals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_duplicate_dismissals_high_id"), ["high_id"], unique=False
        )

    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_company"))
        batch_op.drop_index(batch_op.f("ix_contacts_last_name"))
        batch_op.create_index(
            "ix_contacts_email_prefix",
            ["email"],
            unique=False,
            postgresql_ops={"email": "varchar_pattern_ops"},
        )

    # Expression indexes: autogenerate cannot write them, so they are spelled out per backend.
    ops = " varchar_pattern_ops" if op.get_bind().dialect.name == "postgresql" else ""
    for column in ("last_name", "company"):
        op.execute(f"CREATE INDEX ix_contacts_{column}_lower ON contacts (lower({column}){ops})")

    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(
            "ix_events_contact_id_type_occurred_at",
            ["contact_id", "type", "occurred_at"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_contact_id_type_occurred_at")

    op.drop_index("ix_contacts_last_name_lower", table_name="contacts")
    op.drop_index("ix_contacts_company_lower", table_name="contacts")
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_contacts_email_prefix", postgresql_ops={"email": "varchar_pattern_ops"}
        )
        batch_op.create_index(batch_op.f("ix_contacts_last_name"), ["last_name"], unique=False)
        batch_op.create_index(batch_op.f("ix_contacts_company"), ["company"], unique=False)

    with op.batch_alter_table("duplicate_dismissals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_duplicate_dismissals_high_id"))

    op.drop_table("duplicate_dismissals")
    op.drop_table("segments")
    with op.batch_alter_table("import_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_import_jobs_state_id")

    op.drop_table("import_jobs")
    op.drop_table("custom_fields")
