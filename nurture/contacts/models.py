from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Date, ForeignKey, Index, String
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
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (
        Index("ix_contacts_lifecycle_id", "lifecycle", "id"),
        Index("ix_contacts_last_name", "last_name"),
        Index("ix_contacts_company", "company"),
    )

    def __repr__(self) -> str:
        return f"<Contact {self.id} {self.email}>"
