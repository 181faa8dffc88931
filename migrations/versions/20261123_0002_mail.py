"""mail: templates, versions, outbox messages, captured mails

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 13:38:55.228935
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nurture.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "email_templates",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("archived_at", nurture.db.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_templates")),
        sa.UniqueConstraint("name", name=op.f("uq_email_templates_name")),
    )
    op.create_table(
        "email_template_versions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "template_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("css", sa.Text(), nullable=False),
        sa.Column("layout", sa.String(length=32), nullable=True),
        sa.Column("created_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column(
            "created_by_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["created_by_id"],
            ["users.id"],
            name=op.f("fk_email_template_versions_created_by_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["template_id"],
            ["email_templates.id"],
            name=op.f("fk_email_template_versions_template_id_email_templates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_email_template_versions")),
        sa.UniqueConstraint(
            "template_id", "number", name=op.f("uq_email_template_versions_template_id_number")
        ),
    )
    op.create_table(
        "messages",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("token", sa.String(length=32), nullable=False),
        sa.Column(
            "purpose",
            sa.Enum(
                "marketing",
                "transactional",
                "test",
                name="message_purpose",
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
                "sending",
                "sent",
                "failed",
                "uncertain",
                "cancelled",
                name="message_state",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column(
            "template_version_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=True,
        ),
        sa.Column("builtin", sa.String(length=64), nullable=True),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("topic", sa.String(length=64), nullable=True),
        sa.Column("to_addr", sa.String(length=320), nullable=False),
        sa.Column("to_name", sa.String(length=200), nullable=False),
        sa.Column("to_domain", sa.String(length=255), nullable=False),
        sa.Column("context", sa.JSON(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("not_before", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", nurture.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("next_attempt_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", nurture.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=36), nullable=True),
        sa.Column("smtp_code", sa.Integer(), nullable=True),
        sa.Column("smtp_response", sa.Text(), nullable=True),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("created_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", nurture.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["template_version_id"],
            ["email_template_versions.id"],
            name=op.f("fk_messages_template_version_id_email_template_versions"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sa.UniqueConstraint("key", name=op.f("uq_messages_key")),
        sa.UniqueConstraint("token", name=op.f("uq_messages_token")),
    )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_messages_contact_id"), ["contact_id"], unique=False)
        batch_op.create_index("ix_messages_sent_at", ["sent_at"], unique=False)
        batch_op.create_index(
            "ix_messages_state_lease_until", ["state", "lease_until"], unique=False
        )
        batch_op.create_index(
            "ix_messages_state_next_attempt_at", ["state", "next_attempt_at"], unique=False
        )
        batch_op.create_index(
            "ix_messages_to_domain_sent_at", ["to_domain", "sent_at"], unique=False
        )
        batch_op.create_index(
            "ix_messages_template_version_id_sent_at",
            ["template_version_id", "sent_at"],
            unique=False,
        )

    op.create_table(
        "captured_mails",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("envelope_from", sa.String(length=320), nullable=False),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("raw", sa.LargeBinary(), nullable=False),
        sa.Column("captured_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["messages.id"],
            name=op.f("fk_captured_mails_message_id_messages"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_captured_mails")),
    )
    with op.batch_alter_table("captured_mails", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_captured_mails_captured_at"), ["captured_at"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_captured_mails_message_id"), ["message_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("captured_mails", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_captured_mails_message_id"))
        batch_op.drop_index(batch_op.f("ix_captured_mails_captured_at"))

    op.drop_table("captured_mails")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_template_version_id_sent_at")
        batch_op.drop_index("ix_messages_to_domain_sent_at")
        batch_op.drop_index("ix_messages_state_next_attempt_at")
        batch_op.drop_index("ix_messages_state_lease_until")
        batch_op.drop_index("ix_messages_sent_at")
        batch_op.drop_index(batch_op.f("ix_messages_contact_id"))

    op.drop_table("messages")
    op.drop_table("email_template_versions")
    op.drop_table("email_templates")
