from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, LargeBinary, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from nurture.db import Base, BigId, UtcDateTime, checked_enum

GENDERS = ("female", "male", "diverse", "unknown")
FORMALITIES = ("formal", "informal")


class Lifecycle(enum.StrEnum):
    LEAD = "lead"
    CUSTOMER = "customer"
    AT_RISK = "at_risk"
    CHURNED = "churned"
    WON_BACK = "won_back"


class Contact(Base):
    """One person, once: the normalised email and the customer number are unique."""

    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # Lower-cased after email-validator's normalisation (IDNA, Unicode NFC): providers treat
    # local parts case-insensitively in practice, and a duplicate costs more than a collision.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    first_name: Mapped[str] = mapped_column(String(100), default="")
    last_name: Mapped[str] = mapped_column(String(100), default="")
    gender: Mapped[str] = mapped_column(checked_enum(GENDERS, "gender"), default="unknown")
    title: Mapped[str] = mapped_column(String(50), default="")
    formality: Mapped[str] = mapped_column(checked_enum(FORMALITIES, "formality"), default="formal")
    language: Mapped[str] = mapped_column(String(8), default="de")
    time_zone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    birthday: Mapped[date | None] = mapped_column(Date, nullable=True)
    company: Mapped[str] = mapped_column(String(200), default="")
    industry: Mapped[str] = mapped_column(String(100), default="")
    company_size: Mapped[str] = mapped_column(String(50), default="")
    city: Mapped[str] = mapped_column(String(100), default="")
    country: Mapped[str] = mapped_column(String(2), default="")
    customer_number: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    phone: Mapped[str] = mapped_column(String(50), default="")
    mobile: Mapped[str] = mapped_column(String(50), default="")
    website: Mapped[str] = mapped_column(String(300), default="")
    linkedin: Mapped[str] = mapped_column(String(300), default="")
    xing: Mapped[str] = mapped_column(String(300), default="")
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    custom: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    owner_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True
    )
    lifecycle: Mapped[Lifecycle] = mapped_column(checked_enum(Lifecycle, "lifecycle"))
    source: Mapped[str] = mapped_column(String(100), default="")
    # Set by the recipient in the preference centre: at most this many marketing mails per
    # week, and none before this time.
    max_mails_per_week: Mapped[int | None] = mapped_column(nullable=True)
    paused_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        Index("ix_contacts_lifecycle_id", "lifecycle", "id"),
        # Prefix search ("mül…") over lower-cased names; varchar_pattern_ops lets PostgreSQL
        # use the index for LIKE 'x%' whatever the database collation.
        Index(
            "ix_contacts_last_name_lower",
            func.lower(last_name).label("lower_last_name"),
            postgresql_ops={"lower_last_name": "varchar_pattern_ops"},
        ),
        Index(
            "ix_contacts_company_lower",
            func.lower(company).label("lower_company"),
            postgresql_ops={"lower_company": "varchar_pattern_ops"},
        ),
        Index("ix_contacts_email_prefix", "email", postgresql_ops={"email": "varchar_pattern_ops"}),
        # Keyset paging of the contacts list in each sort order (the pattern_ops indexes above
        # serve prefix search only, not ORDER BY in the database's collation).
        Index("ix_contacts_sort_last_name", func.lower(last_name), "id"),
        Index("ix_contacts_sort_company", func.lower(company), "id"),
        Index("ix_contacts_updated_at_id", "updated_at", "id"),
    )

    def __repr__(self) -> str:
        return f"<Contact {self.id} {self.email}>"


CUSTOM_FIELD_KINDS = ("text", "number", "date", "choice")


class CustomField(Base):
    """A typed field an admin defines in Settings; values live in ``Contact.custom[key]``.

    Values are stored as JSON: text and choice as strings, number as a JSON number, date as an
    ISO ``YYYY-MM-DD`` string (which sorts and compares as text in both backends).
    """

    __tablename__ = "custom_fields"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    # The key is what templates, the API and CSV mappings use; it never changes once created.
    key: Mapped[str] = mapped_column(String(40), unique=True)
    label: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(checked_enum(CUSTOM_FIELD_KINDS, "custom_field_kind"))
    choices: Mapped[list[str]] = mapped_column(JSON, default=list)
    position: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    def __repr__(self) -> str:
        return f"<CustomField {self.key} {self.kind}>"


class Segment(Base):
    """A saved filter: ``definition`` is validated JSON (see contacts.segments), never SQL."""

    __tablename__ = "segments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())

    def __repr__(self) -> str:
        return f"<Segment {self.id} {self.name}>"


class DuplicateDismissal(Base):
    """A marketer said these two contacts are different people; never suggest the pair again."""

    __tablename__ = "duplicate_dismissals"

    # Stored with low_id < high_id so a pair has one row whichever way round it was dismissed.
    low_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True
    )
    high_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    dismissed_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    dismissed_at: Mapped[datetime] = mapped_column(UtcDateTime())


IMPORT_KINDS = ("contacts", "events")
IMPORT_STATES = ("queued", "running", "done", "failed")


class ImportJob(Base):
    """An uploaded CSV the worker imports, with its progress and its report.

    The file lives in the row, not on disk: the worker that runs it may be on another machine.
    """

    __tablename__ = "import_jobs"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(checked_enum(IMPORT_KINDS, "import_kind"))
    state: Mapped[str] = mapped_column(checked_enum(IMPORT_STATES, "import_state"))
    filename: Mapped[str] = mapped_column(String(255))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    mapping: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)
    created_by_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # Physical lines minus the header: an upper bound for the progress bar.
    rows_total: Mapped[int] = mapped_column(default=0)
    rows_done: Mapped[int] = mapped_column(default=0)
    created: Mapped[int] = mapped_column(default=0)
    updated: Mapped[int] = mapped_column(default=0)
    unchanged: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    # The downloadable error report (errors_csv) and, for a file that failed as a whole, why.
    errors_csv: Mapped[str] = mapped_column(Text, default="")
    problem: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (Index("ix_import_jobs_state_id", "state", "id"),)

    def __repr__(self) -> str:
        return f"<ImportJob {self.id} {self.kind} {self.state}>"
