"""consent

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 16:19:53.604467
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import nurture.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "consent_texts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_texts")),
        sa.UniqueConstraint("sha256", name=op.f("uq_consent_texts_sha256")),
    )
    op.create_table(
        "signup_attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signup_attempts")),
    )
    with op.batch_alter_table("signup_attempts", schema=None) as batch_op:
        batch_op.create_index("ix_signup_attempts_key_at", ["key", "at"], unique=False)

    op.create_table(
        "suppressions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("address_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "reason",
            sa.Enum(
                "unsubscribed",
                "hard_bounce",
                "complaint",
                "manual",
                "erased",
                name="suppression_reason",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("created_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_suppressions")),
        sa.UniqueConstraint("address_hash", name=op.f("uq_suppressions_address_hash")),
    )
    op.create_table(
        "topics",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("slug", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "marketing",
                "tracking",
                name="topic_kind",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("own_similar_products", sa.Boolean(), nullable=False),
        sa.Column("created_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topics")),
        sa.UniqueConstraint("slug", name=op.f("uq_topics_slug")),
    )
    op.create_table(
        "signup_forms",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("topic_ids", sa.JSON(), nullable=False),
        sa.Column("text_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("ask_tracking", sa.Boolean(), nullable=False),
        sa.Column("language", sa.String(length=8), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["text_id"], ["consent_texts.id"], name=op.f("fk_signup_forms_text_id_consent_texts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_signup_forms")),
        sa.UniqueConstraint("public_id", name=op.f("uq_signup_forms_public_id")),
    )
    op.create_table(
        "consent_ledger",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("topic_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "action",
            sa.Enum(
                "requested",
                "confirmed",
                "reconfirmed",
                "imported",
                "existing_customer",
                "withdrawn",
                "objected",
                "expired",
                "erased",
                name="consent_action",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=500), nullable=True),
        sa.Column("text_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("text_hash", sa.String(length=64), nullable=True),
        sa.Column(
            "request_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("mail_message_id", sa.String(length=255), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_consent_ledger_contact_id_contacts"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["text_id"],
            ["consent_texts.id"],
            name=op.f("fk_consent_ledger_text_id_consent_texts"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["topic_id"],
            ["topics.id"],
            name=op.f("fk_consent_ledger_topic_id_topics"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_ledger")),
    )
    with op.batch_alter_table("consent_ledger", schema=None) as batch_op:
        batch_op.create_index(
            "ix_consent_ledger_contact_id_topic_id_at",
            ["contact_id", "topic_id", "at"],
            unique=False,
        )

    op.create_table(
        "consent_requests",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("topic_ids", sa.JSON(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("text_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("source", sa.String(length=200), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.String(length=500), nullable=True),
        sa.Column("requested_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", nurture.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column(
            "message_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("repermission", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_consent_requests_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["text_id"],
            ["consent_texts.id"],
            name=op.f("fk_consent_requests_text_id_consent_texts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_requests")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_consent_requests_token_hash")),
    )
    with op.batch_alter_table("consent_requests", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_consent_requests_expires_at"), ["expires_at"], unique=False
        )

    op.create_table(
        "consents",
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("topic_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "granted",
                "existing_customer",
                "none",
                "objected",
                name="consent_state",
                native_enum=False,
                create_constraint=True,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("granted_at", nurture.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("changed_at", nurture.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_consents_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["topic_id"],
            ["topics.id"],
            name=op.f("fk_consents_topic_id_topics"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("contact_id", "topic_id", name=op.f("pk_consents")),
    )
    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consents_topic_id"), ["topic_id"], unique=False)

    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_mails_per_week", sa.Integer(), nullable=True))
        batch_op.add_column(
            sa.Column("paused_until", nurture.db.UtcDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("contacts", schema=None) as batch_op:
        batch_op.drop_column("paused_until")
        batch_op.drop_column("max_mails_per_week")

    with op.batch_alter_table("consents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consents_topic_id"))

    op.drop_table("consents")
    with op.batch_alter_table("consent_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_requests_expires_at"))

    op.drop_table("consent_requests")
    with op.batch_alter_table("consent_ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_ledger_contact_id_topic_id_at")

    op.drop_table("consent_ledger")
    op.drop_table("signup_forms")
    op.drop_table("topics")
    op.drop_table("suppressions")
    with op.batch_alter_table("signup_attempts", schema=None) as batch_op:
        batch_op.drop_index("ix_signup_attempts_key_at")

    op.drop_table("signup_attempts")
    op.drop_table("consent_texts")
