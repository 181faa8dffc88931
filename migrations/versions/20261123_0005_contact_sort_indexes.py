"""contact sort indexes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 16:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Expression indexes: autogenerate cannot write them.
    op.execute("CREATE INDEX ix_contacts_sort_last_name ON contacts (lower(last_name), id)")
    op.execute("CREATE INDEX ix_contacts_sort_company ON contacts (lower(company), id)")
    op.create_index("ix_contacts_updated_at_id", "contacts", ["updated_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_contacts_updated_at_id", table_name="contacts")
    op.drop_index("ix_contacts_sort_company", table_name="contacts")
    op.drop_index("ix_contacts_sort_last_name", table_name="contacts")
