"""Finding the same person under two addresses, and remembering pairs that are not.

The unique email and customer number stop exact duplicates; what remains is "Anna Müller
<anna@firma.de>" next to "Anna Mueller <a.mueller@gmail.com>". Comparing every pair is
quadratic, so candidates come from **blocking**: one streaming pass computes a few cheap keys
per contact, only contacts sharing a key are compared, and a key shared by more than
``MAX_BLOCK`` contacts (a switchboard number, "Müller" at a large customer) says nothing and is
skipped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from itertools import combinations
from typing import Any

from rapidfuzz import fuzz
from rapidfuzz.utils import default_process
from sqlalchemy import func, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from nurture.auth.models import User
from nurture.contacts.models import Contact, DuplicateDismissal
from nurture.errors import N_, UserFacingError
from nurture.events import Event

MAX_BLOCK = 50
DEFAULT_MIN_SCORE = 70
STREAM_BATCH = 5000
ID_CHUNK = 1000  # ids per IN (...): well below every backend's parameter limit
PHONE_DIGITS = 8

# Points; see find_candidates for how they add up.
NAME_WEIGHT = 1.2  # per point of name similarity above 50
MAX_NAME_POINTS = 60
SIMILAR_NAME = 80
SAME_PHONE = 30
SAME_EMAIL_LOCAL_PART = 25
SAME_COMPANY = 20
SAME_BIRTHDAY = 20
SAME_CITY = 5
DIFFERENT_BIRTHDAY = -40
DIFFERENT_CUSTOMER_NUMBER = -40
SIMILAR_COMPANY = 90

# Shared mailboxes: "info@a.de" and "info@b.de" are two companies, not one person.
ROLE_LOCAL_PARTS = frozenset(
    {
        "admin",
        "buchhaltung",
        "contact",
        "einkauf",
        "empfang",
        "hallo",
        "hello",
        "hi",
        "info",
        "invoice",
        "kontakt",
        "mail",
        "marketing",
        "newsletter",
        "no-reply",
        "noreply",
        "office",
        "post",
        "rechnung",
        "sales",
        "service",
        "support",
        "team",
        "vertrieb",
        "webmaster",
        "zentrale",
    }
)
# Legal forms and filler words say nothing about which company it is.
COMPANY_NOISE = frozenset(
    {
        "ag",
        "co",
        "e",
        "ek",
        "ev",
        "gbr",
        "gmbh",
        "haftungsbeschraenkt",
        "inc",
        "kg",
        "kgaa",
        "llc",
        "ltd",
        "mbh",
        "ohg",
        "se",
        "ug",
        "und",
        "v",
    }
)

_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue"})
_NON_DIGITS = re.compile(r"\D+")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_LOCAL_SEPARATORS = re.compile(r"[._\-0-9]+")

# The columns one pass reads; everything else stays in the database.
_COLUMNS = (
    Contact.id,
    Contact.email,
    Contact.first_name,
    Contact.last_name,
    Contact.company,
    Contact.city,
    Contact.phone,
    Contact.mobile,
    Contact.birthday,
    Contact.customer_number,
)


class DuplicateError(UserFacingError):
    """A pair cannot be dismissed."""


@dataclass(frozen=True)
class Candidate:
    """Two contacts that may be one person; ``low_id < high_id``, ``score`` 0..100.

    ``reasons`` are machine codes (the UI translates them): similar_name, same_phone,
    same_email_local_part, same_company, same_birthday, same_city, and the evidence against:
    different_birthday, different_customer_number.
    """

    low_id: int
    high_id: int
    score: int
    reasons: tuple[str, ...]


# -- normalising -----------------------------------------------------------------------------


@lru_cache(maxsize=65536)
def fold(text: str | None) -> str:
    """Lower case, German umlauts spelt out (ä→ae, ß→ss), other accents dropped, spaces squeezed.

    "Müller", "MUELLER" and "Mueller" all become "mueller".
    """
    if not text:
        return ""
    folded = text.casefold().translate(_UMLAUTS)
    if not folded.isascii():
        folded = "".join(
            c for c in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(c)
        )
    return " ".join(folded.split())


@lru_cache(maxsize=65536)
def cologne_phonetic(text: str) -> str:
    """The Kölner Phonetik code of a (folded) word: Meier, Meyer, Maier and Mayer are all "67".

    German spelling variants of one surname share a code, which makes it a blocking key that
    survives the typos and transliterations a plain lower-case comparison misses.
    """
    letters = [c for c in text.upper() if "A" <= c <= "Z"]
    codes: list[str] = []
    for i, c in enumerate(letters):
        before = letters[i - 1] if i else ""
        after = letters[i + 1] if i + 1 < len(letters) else ""
        if c in "AEIJOUY":
            code = "0"
        elif c == "H":
            code = ""
        elif c == "B":
            code = "1"
        elif c == "P":
            code = "3" if after == "H" else "1"
        elif c in "DT":
            code = "8" if after in ("C", "S", "Z") else "2"
        elif c in "FVW":
            code = "3"
        elif c in "GKQ":
            code = "4"
        elif c == "C":
            if i == 0:
                code = "4" if after in ("A", "H", "K", "L", "O", "Q", "R", "U", "X") else "8"
            elif before in ("S", "Z"):
                code = "8"
            else:
                code = "4" if after in ("A", "H", "K", "O", "Q", "U", "X") else "8"
        elif c == "X":
            code = "8" if before in ("C", "K", "Q") else "48"
        elif c == "L":
            code = "5"
        elif c in "MN":
            code = "6"
        elif c == "R":
            code = "7"
        else:  # S, Z
            code = "8"
        codes.append(code)
    collapsed: list[str] = []
    for digit in "".join(codes):
        if not collapsed or collapsed[-1] != digit:
            collapsed.append(digit)
    if not collapsed:
        return ""
    return collapsed[0] + "".join(d for d in collapsed[1:] if d != "0")


def phone_key(phone: str | None) -> str | None:
    """The last 8 digits: "+49 30 1234-5678" and "030 12345678" are the same line."""
    if not phone:
        return None
    digits = _NON_DIGITS.sub("", phone)
    return digits[-PHONE_DIGITS:] if len(digits) >= PHONE_DIGITS else None


def email_local_part(email: str) -> str:
    """The local part without a +tag: anna+shop@x.de and anna@y.de are both "anna"."""
    return email.rsplit("@", 1)[0].split("+", 1)[0]


@lru_cache(maxsize=65536)
def company_key(company: str | None) -> str:
    """The company's name without legal form or punctuation: "Muster GmbH & Co. KG" → "muster"."""
    words = _NON_ALNUM.sub(" ", fold(company)).split()
    return " ".join(w for w in words if w not in COMPANY_NOISE)


# -- blocking --------------------------------------------------------------------------------


Row = tuple[Any, ...]  # the values of _COLUMNS, in that order


def block_keys(row: Row) -> set[str]:
    """The blocks a contact belongs to; two contacts are compared only if they share one."""
    _id, email, first_name, last_name, company, _city, phone, mobile, _bday, _number = row
    keys: set[str] = set()
    for number in (phone, mobile):
        key = phone_key(number)
        if key:
            keys.add(f"p:{key}")
    last = fold(last_name)
    if last:
        keys.add(_name_key(first_name[:1], last))
        firm = company_key(company)
        if firm:
            keys.add(f"c:{firm}:{last}")
    local = email_local_part(email)
    if len(local) >= 3 and local not in ROLE_LOCAL_PARTS:
        keys.add(f"e:{local}")
    return keys


@lru_cache(maxsize=65536)
def _name_key(initial: str, last: str) -> str:
    return f"n:{cologne_phonetic(last)}:{fold(initial)[:1]}"


def _stream(session: Session) -> Iterator[Row]:
    # Core rather than ORM rows (a third of the time at 100k contacts); stream_results uses a
    # server-side cursor on PostgreSQL, so memory stays flat however large the table.
    yield from session.connection().execute(
        select(*_COLUMNS)
        .order_by(Contact.id)
        .execution_options(stream_results=True, max_row_buffer=STREAM_BATCH)
    )


# A block's members: one id while it has one member (most blocks), a list from the second on,
# None once it outgrew MAX_BLOCK. Keyed by the key's hash, not the key: a collision costs one
# needless comparison, while 100k contacts × 4 key strings would cost tens of megabytes.
Blocks = dict[int, int | list[int] | None]


def _blocks(rows: Iterable[Row], wanted: set[str] | None) -> Blocks:
    blocks: Blocks = {}
    for row in rows:
        keys = block_keys(row)
        if wanted is not None:
            keys &= wanted
        contact = row[0]
        for key in keys:
            slot = hash(key)
            members = blocks.get(slot, 0)
            if members == 0:
                blocks[slot] = contact
            elif isinstance(members, int):
                blocks[slot] = [members, contact]
            elif members is None:
                continue
            elif len(members) >= MAX_BLOCK:
                blocks[slot] = None
            else:
                members.append(contact)
    return blocks


def _pairs(blocks: Blocks, contact_id: int | None) -> set[tuple[int, int]]:
    pairs: set[tuple[int, int]] = set()
    for members in blocks.values():
        if not isinstance(members, list):
            continue
        if contact_id is not None:
            pairs.update(
                (min(contact_id, m), max(contact_id, m)) for m in members if m != contact_id
            )
            continue
        # Rows arrive ordered by id, so every block is sorted and combinations yield low < high.
        pairs.update(combinations(members, 2))
    return pairs


def _rows(session: Session, ids: set[int]) -> dict[int, Row]:
    """The rows of the contacts that are in some pair: read again, not kept from the pass."""
    found: dict[int, Row] = {}
    ordered_ids = sorted(ids)
    for start in range(0, len(ordered_ids), ID_CHUNK):
        chunk = ordered_ids[start : start + ID_CHUNK]
        found.update(
            (row[0], row) for row in session.execute(select(*_COLUMNS).where(Contact.id.in_(chunk)))
        )
    return found


# -- scoring ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Profile:
    name: str  # for similarity: the folded full name, else words of the email's local part
    has_name: bool
    local: str
    phones: frozenset[str]
    company: str
    city: str
    birthday: date | None
    customer_number: str | None


def _profile(row: Row) -> _Profile:
    _id, email, first_name, last_name, company, city, phone, mobile, birthday, number = row
    name = fold(f"{first_name} {last_name}")
    local = email_local_part(email)
    return _Profile(
        name=default_process(name or _LOCAL_SEPARATORS.sub(" ", local)),
        has_name=bool(name),
        local=local,
        phones=frozenset(k for k in (phone_key(phone), phone_key(mobile)) if k),
        company=company_key(company),
        city=fold(city),
        birthday=birthday,
        customer_number=number,
    )


def _score(a: _Profile, b: _Profile, floor: int = 0) -> tuple[int, tuple[str, ...]]:
    """Score and reasons; (0, ()) early when even identical names could not reach ``floor``."""
    reasons: list[str] = []
    points = 0.0
    if a.phones & b.phones:
        points += SAME_PHONE
        reasons.append("same_phone")
    if a.local == b.local and len(a.local) >= 3 and a.local not in ROLE_LOCAL_PARTS:
        points += SAME_EMAIL_LOCAL_PART
        reasons.append("same_email_local_part")
    if (
        a.company
        and b.company
        and (a.company == b.company or fuzz.ratio(a.company, b.company) >= SIMILAR_COMPANY)
    ):
        points += SAME_COMPANY
        reasons.append("same_company")
    if a.birthday and b.birthday:
        if a.birthday == b.birthday:
            points += SAME_BIRTHDAY
            reasons.append("same_birthday")
        else:
            points += DIFFERENT_BIRTHDAY
            reasons.append("different_birthday")
    if a.city and a.city == b.city:
        points += SAME_CITY
        reasons.append("same_city")
    if a.customer_number and b.customer_number:
        # Both unique, so never equal: two customer records in the ERP.
        points += DIFFERENT_CUSTOMER_NUMBER
        reasons.append("different_customer_number")
    has_names = bool(a.name and b.name)
    if points + (MAX_NAME_POINTS if has_names else 0) < floor:
        return 0, ()  # most pairs of a name block: the same name and nothing else
    if has_names:
        similarity = fuzz.token_sort_ratio(a.name, b.name)
        points += max(0.0, similarity - 50) * NAME_WEIGHT
        if a.has_name and b.has_name and similarity >= SIMILAR_NAME:
            reasons.insert(0, "similar_name")
    return max(0, min(100, round(points))), tuple(reasons)


def _row_of(contact: Contact) -> Row:
    return tuple(getattr(contact, column.key) for column in _COLUMNS)


def compare(a: Contact, b: Contact) -> Candidate:
    """The score and reasons of any two contacts, as find_candidates would rate them."""
    score, reasons = _score(_profile(_row_of(a)), _profile(_row_of(b)))
    low, high = sorted((a.id, b.id))
    return Candidate(low, high, score, reasons)


def _dismissed(session: Session, contact_id: int | None) -> set[tuple[int, int]]:
    stmt = select(DuplicateDismissal.low_id, DuplicateDismissal.high_id)
    if contact_id is not None:
        stmt = stmt.where(
            or_(DuplicateDismissal.low_id == contact_id, DuplicateDismissal.high_id == contact_id)
        )
    return {(low, high) for low, high in session.execute(stmt)}


def find_candidates(
    session: Session,
    *,
    limit: int = 100,
    min_score: int = DEFAULT_MIN_SCORE,
    contact_id: int | None = None,
) -> list[Candidate]:
    """Pairs of contacts that may be one person, best score first (ties: lower ids first).

    **Blocking.** One pass over the contacts (a few columns, streamed) puts each contact into
    the blocks of its keys:

    - ``p:`` the last 8 digits of its phone and of its mobile number;
    - ``n:`` the Kölner Phonetik code of the folded last name plus the first name's initial
      (Müller/Mueller/Miller, Meier/Meyer share a block);
    - ``c:`` the company without legal form plus the folded last name;
    - ``e:`` the email's local part without +tag, unless it is a role address such as info@.

    Only contacts sharing a block are compared; blocks of more than ``MAX_BLOCK`` (50) members
    are skipped as too generic. Dismissed pairs are left out. ``contact_id`` keeps only the
    pairs with that contact (the pass still reads every row, but compares far fewer).

    **Scoring**, clamped to 0..100:

    - name: rapidfuzz ``token_sort_ratio`` of the folded full names (ä→ae, ö→oe, ü→ue, ß→ss,
      accents dropped; word order ignored) gives 1.2 points per point above 50, so at most 60;
      a contact without a name is compared by the words of its email's local part instead
      (anna.mueller@… reads as "anna mueller"). ``similar_name`` at a ratio of 80 or more;
    - ``same_phone`` +30 (a phone or mobile number ends in the same 8 digits);
    - ``same_email_local_part`` +25 (different domains or +tags);
    - ``same_company`` +20 (names without legal form, ratio ≥ 90);
    - ``same_birthday`` +20, but ``different_birthday`` −40 when both are known and differ;
    - ``same_city`` +5;
    - ``different_customer_number`` −40: both have one, so the ERP holds two customers.

    The same name alone (60) is not enough at the default ``min_score`` of 70: two "Thomas
    Müller" are usually two people. Same name and company (80), same name and phone (90), or
    a near-identical name and the same email local part are.
    """
    if contact_id is not None:
        target = session.execute(select(*_COLUMNS).where(Contact.id == contact_id)).first()
        if target is None:
            return []
        wanted: set[str] | None = block_keys(tuple(target))
        if not wanted:
            return []
    else:
        wanted = None
    pairs = _pairs(_blocks(_stream(session), wanted), contact_id)
    pairs -= _dismissed(session, contact_id)
    rows = _rows(session, {contact for pair in pairs for contact in pair})
    # A contact deleted since the pass has no row; its pairs drop out.
    profiles = {contact: _profile(row) for contact, row in rows.items()}
    found = []
    for low, high in pairs:
        if low not in profiles or high not in profiles:
            continue
        score, reasons = _score(profiles[low], profiles[high], min_score)
        if score >= min_score:
            found.append(Candidate(low, high, score, reasons))
    found.sort(key=lambda c: (-c.score, c.low_id, c.high_id))
    return found[:limit]


# -- dismissing ------------------------------------------------------------------------------


def ordered(a_id: int, b_id: int) -> tuple[int, int]:
    """(low, high) of a pair; refuses a contact paired with itself."""
    if a_id == b_id:
        raise DuplicateError(N_("A contact cannot be a duplicate of itself."))
    return (a_id, b_id) if a_id < b_id else (b_id, a_id)


def dismiss(session: Session, a_id: int, b_id: int, *, user: User | None, now: datetime) -> None:
    """Remember that two contacts are different people; dismissing twice changes nothing."""
    low, high = ordered(a_id, b_id)
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    # ON CONFLICT DO NOTHING: two marketers dismissing the same pair at once both succeed.
    session.execute(
        insert(DuplicateDismissal)
        .values(
            low_id=low,
            high_id=high,
            dismissed_by_id=user.id if user is not None else None,
            dismissed_at=now,
        )
        .on_conflict_do_nothing()
    )
    session.flush()


def is_dismissed(session: Session, a_id: int, b_id: int) -> bool:
    low, high = ordered(a_id, b_id)
    return session.get(DuplicateDismissal, (low, high)) is not None


# -- what the pages show ---------------------------------------------------------------------


def contacts_by_id(session: Session, ids: Iterable[int]) -> dict[int, Contact]:
    wanted = set(ids)
    if not wanted:
        return {}
    return {c.id: c for c in session.scalars(select(Contact).where(Contact.id.in_(wanted)))}


def event_counts(session: Session, ids: Iterable[int]) -> dict[int, int]:
    """How many events each contact has; 0 for none."""
    wanted = set(ids)
    counts = dict.fromkeys(wanted, 0)
    if wanted:
        stmt = (
            select(Event.contact_id, func.count())
            .where(Event.contact_id.in_(wanted))
            .group_by(Event.contact_id)
        )
        counts.update({contact_id: n for contact_id, n in session.execute(stmt)})
    return counts
