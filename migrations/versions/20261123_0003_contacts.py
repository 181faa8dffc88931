"""contacts

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 14:49:45.847027
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nurture.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("first_name", sa.String(length=100), nullable=False),
        sa.Column("last_name", sa.String(length=100), nullable=False),
        sa.Column(
            "gender",
            sa.Enum(
                "female",
                "male",
                "diverse",
                "unknown",
                name="gender",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("title", sa.String(length=50), nullable=False),
        sa.Column(
            "formality",
            sa.Enum(
                "formal",
                "informal",
                name="formality",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=True),
        sa.Column("birthday", sa.Date(), nullable=True),
        sa.Column("company", sa.String(length=200), nullable=False),
        sa.Column("industry", sa.String(length=100), nullable=False),
        sa.Column("company_size", sa.String(length=50), nullable=False),
        sa.Column("city", sa.String(length=100), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("customer_number", sa.String(length=64), nullable=True),
        sa.Column("phone", sa.String(length=50), nullable=False),
        sa.Column("mobile", sa.String(length=50), nullable=False),
        sa.Column("website", sa.String(length=300), nullable=False),
        sa.Column("linkedin", sa.String(length=300), nullable=False),
        sa.Column("xing", sa.String(length=300), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("custom", sa.JSON(), nullable=False),
        sa.Column("owner_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column(
            "lifecycle",
            sa.Enum(
                "lead",
                "customer",
                "at_risk",
                "churned",
                "won_back",
                name="lifecycle",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("created_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_contacts_owner_id_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sa.UniqueConstraint("customer_number", name=op.f("uq_contacts_customer_number")),
        sa.UniqueConstraint("email", name=op.f("uq_contacts_email")),
    )
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.create_index("ix_contacts_company", ["company"], unique=False)
        batch_op.create_index("ix_contacts_last_name", ["last_name"], unique=False)
        batch_op.create_index("ix_contacts_lifecycle_id", ["lifecycle", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_contacts_owner_id"), ["owner_id"], unique=False)

    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_foreign_key(
            batch_op.f("fk_events_contact_id_contacts"),
            "contacts",
            ["contact_id"],
            ["id"],
            ondelete="SET NULL",
        )

    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_foreign_key(
            batch_op.f("fk_messages_contact_id_contacts"),
            "contacts",
            ["contact_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_messages_contact_id_contacts"), type_="foreignkey")

    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("fk_events_contact_id_contacts"), type_="foreignkey")

    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_contacts_owner_id"))
        batch_op.drop_index("ix_contacts_lifecycle_id")
        batch_op.drop_index("ix_contacts_last_name")
        batch_op.drop_index("ix_contacts_company")

    op.drop_table("contacts")
