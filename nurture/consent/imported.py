"""Consent that arrives with a contact import: only with a proof reference, flagged as imported.

An import never creates consent by itself: a list of addresses proves nothing. The person
importing declares for the whole file where the consent was collected, when, and with which
wording (``ConsentProof``); then a column mapped to ``consent`` says per row whether that person
gave it (ja/yes/1/x/true or nein/no/0/empty), or, declared explicitly with ``all_rows``, every
row did. Each yes becomes one ``imported`` ledger entry per topic, whose evidence names the
source, the date, the text's hash, the file and the line.

Decisions:
- Marketing topics only. Open and click tracking (§25 TDDDG) needs a consent that names the
  tracking; nurture asks for it on its own forms and in the preference centre, where it knows
  the wording did. A file's yes/no column cannot show that.
- The proof date is a calendar day in Berlin time (what spreadsheets hold), not after today. The
  consent counts from that day (``Consent.granted_at``), so the dormancy limit of the send gate
  applies to an old consent instead of restarting with the import.
- A topic already granted is skipped: a re-import writes nothing. A withdrawal or objection
  recorded on or after the proof date wins (the person took back what the proof documents): the
  topic is skipped and the row gets a note "consent not imported: withdrawn on …", which is
  counted, not an error. One recorded before the proof date does not: the proof shows a newer
  consent.
- Consent is counted per (contact, topic) pair: ``consents_imported`` entries were written,
  ``consents_skipped`` were not (already granted, or withdrawn since).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from nurture.consent.ledger import Change, Origin, record_many, text_version, topic_by_slug
from nurture.consent.models import (
    Action,
    Consent,
    ConsentEntry,
    ConsentState,
    ConsentText,
    Topic,
    TopicKind,
)
from nurture.contacts.custom_fields import parse_date
from nurture.contacts.fields import LANGUAGES
from nurture.contacts.importer import (
    CONSENT,
    Applied,
    ImportFileError,
    Outcome,
    RowNote,
)
from nurture.errors import N_

BERLIN = ZoneInfo("Europe/Berlin")
MAX_SOURCE = 200
MAX_TEXT = 20_000
YES = frozenset({"ja", "j", "yes", "y", "1", "x", "true", "wahr"})
NO = frozenset({"", "nein", "n", "no", "0", "false", "falsch"})
# Headers (lower case, letters and digits only) read as the consent column when a proof is given
# and the caller left the mapping to the importer.
SUGGESTED = frozenset({"consent", "einwilligung", "optin", "werbeeinwilligung"})
# What a withdrawal since the proof date looks like in a row's note.
REFUSALS = {Action.WITHDRAWN: "withdrawn", Action.OBJECTED: "objected"}


class ConsentProofError(ImportFileError):
    """A proof reference that cannot be used; ``field`` names the input it concerns."""

    def __init__(self, message: str, *, field: str | None = None, **params: object) -> None:
        super().__init__(message, **params)
        self.field = field


@dataclass(frozen=True)
class ConsentProof:
    """What the person importing declares for the whole file."""

    topics: tuple[str, ...]  # slugs
    source: str  # where the consent was collected, e.g. "Messe-Formular Köln 2025"
    collected_on: date
    text: str  # the wording the people agreed to; stored as a versioned ConsentText
    language: str = "de"
    # No consent column: every imported row consented. Must be declared, never assumed.
    all_rows: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "topics": list(self.topics),
            "source": self.source,
            "date": self.collected_on.isoformat(),
            "text": self.text,
            "language": self.language,
            "all_rows": self.all_rows,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ConsentProof:
        return cls(
            topics=tuple(data["topics"]),
            source=data["source"],
            collected_on=date.fromisoformat(data["date"]),
            text=data["text"],
            language=data.get("language", "de"),
            all_rows=bool(data.get("all_rows")),
        )

    @property
    def since(self) -> datetime:
        """The start of the proof date: the consent counts from here."""
        return datetime.combine(self.collected_on, time.min, tzinfo=BERLIN).astimezone(UTC)


def parse_proof_date(value: str | date) -> date:
    """A date as YYYY-MM-DD or DD.MM.YYYY."""
    if isinstance(value, date):
        return value
    value = value.strip()
    if not value:
        raise ConsentProofError(
            N_("Give the date on which the consent was collected."), field="date"
        )
    try:
        return parse_date(value)
    except ValueError:
        raise ConsentProofError(
            N_("%(value)s is not a date as YYYY-MM-DD or DD.MM.YYYY."), field="date", value=value
        ) from None


def parse_proof(
    *,
    topics: str | Iterable[str],
    source: str,
    collected_on: str | date,
    text: str,
    language: str = "de",
    all_rows: bool = False,
) -> ConsentProof:
    """A proof from form or command-line input; ``topics`` a comma list or slugs."""
    items = topics.split(",") if isinstance(topics, str) else topics
    slugs = tuple(dict.fromkeys(slug.strip() for slug in items if slug.strip()))
    return ConsentProof(
        topics=slugs,
        source=" ".join(source.split()),
        collected_on=parse_proof_date(collected_on),
        text=text.strip(),
        language=language.strip().lower() or "de",
        all_rows=all_rows,
    )


def check_proof(session: Session, proof: ConsentProof, *, now: datetime) -> list[Topic]:
    """The proof's topics; ConsentProofError for anything that makes it no proof."""
    if not proof.topics:
        raise ConsentProofError(N_("Choose the topics the contacts consented to."), field="topics")
    topics = []
    for slug in proof.topics:
        topic = topic_by_slug(session, slug)
        if topic is None:
            raise ConsentProofError(N_("There is no topic %(slug)s."), field="topics", slug=slug)
        if topic.kind is not TopicKind.MARKETING:
            raise ConsentProofError(
                N_(
                    "Consent to open and click tracking cannot be imported; people give it "
                    "on nurture's own forms and in the preference centre."
                ),
                field="topics",
            )
        topics.append(topic)
    if not proof.source:
        raise ConsentProofError(
            N_("Name where the consent was collected (the form, event or campaign)."),
            field="source",
        )
    if len(proof.source) > MAX_SOURCE:
        raise ConsentProofError(
            N_("The source is longer than %(max)d characters."), field="source", max=MAX_SOURCE
        )
    if proof.collected_on > now.astimezone(BERLIN).date():
        raise ConsentProofError(
            N_("The date on which the consent was collected lies in the future."), field="date"
        )
    if not proof.text:
        raise ConsentProofError(
            N_("The consent text the people agreed to is required, word for word."),
            field="text",
        )
    if len(proof.text) > MAX_TEXT:
        raise ConsentProofError(
            N_("The consent text is longer than %(max)d characters."), field="text", max=MAX_TEXT
        )
    if proof.language not in LANGUAGES:
        raise ConsentProofError(
            N_("The language of the consent text must be one of %(languages)s."),
            field="language",
            languages=", ".join(LANGUAGES),
        )
    return topics


def check_mapping(targets: Collection[str], proof: ConsentProof) -> None:
    """Per-row consent comes from a column, or from the explicit ``all_rows``; not both."""
    if CONSENT in targets and proof.all_rows:
        raise ConsentProofError(
            N_(
                "Either map the column that says whether each person consented, or declare "
                "that every row consented; not both."
            ),
            field="all_rows",
        )
    if CONSENT not in targets and not proof.all_rows:
        raise ConsentProofError(
            N_(
                "Map the column that says whether each person consented, or declare that "
                "every row of the file consented."
            ),
            field="all_rows",
        )


def consent_cell(cell: str) -> bool | None:
    """True for yes, False for no, None for anything else."""
    value = cell.strip().casefold()
    if value in YES:
        return True
    if value in NO:
        return False
    return None


def _among(session: Session, column: Any, ids: list[int]) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        # One array parameter, as the importer's _among: a short statement whatever the batch.
        keys = select(func.unnest(bindparam(None, ids, type_=ARRAY(BigInteger()))))
        return column.in_(keys.scalar_subquery())
    return column.in_(ids)


class ConsentImport:
    """The importer's RowExtension that records the consent a proof reference covers."""

    targets = frozenset({CONSENT})

    def __init__(
        self,
        session: Session,
        proof: ConsentProof,
        *,
        reference: str,
        file: str,
        now: datetime,
        declared_by: str | None = None,
    ) -> None:
        """``reference`` names the import in the ledger's source (``import:<reference>``: the
        file or the job); ``declared_by`` ("user:<id>") who vouched for the proof."""
        self.topics = check_proof(session, proof, now=now)
        self.proof = proof
        self.now = now
        self.origin = Origin(source=f"import:{reference}")
        self.file = file
        self.declared_by = declared_by
        self.text: ConsentText | None = None

    # -- RowExtension ---------------------------------------------------------------------

    def suggest(self, header: list[str]) -> dict[str, str]:
        if self.proof.all_rows:
            return {}  # every row consented: a column that looks like consent stays unmapped
        for column in header:
            if "".join(ch for ch in column.casefold() if ch.isalnum()) in SUGGESTED:
                return {column: CONSENT}
        return {}

    def check_mapping(self, targets: Collection[str]) -> None:
        check_mapping(targets, self.proof)

    def check_row(self, cells: dict[str, str]) -> tuple[str, str] | None:
        if CONSENT in cells and consent_cell(cells[CONSENT]) is None:
            return CONSENT, (
                f"{cells[CONSENT].strip()!r} is not yes or no (ja/nein, yes/no, 1/0, x or empty)"
            )
        return None

    def prepare(self, session: Session) -> None:
        # Per batch, outside the batch's savepoint: a retried batch must not lose the text.
        self.text = text_version(
            session, self.proof.text, language=self.proof.language, now=self.now
        )

    def apply(self, session: Session, rows: list[Applied]) -> Outcome:
        """Record the consent of the rows that say yes; one query for their current states."""
        consenting = [
            row
            for row in rows
            if self.proof.all_rows or consent_cell(row.cells.get(CONSENT, "")) is True
        ]
        outcome = Outcome()
        if not consenting:
            return outcome
        assert self.text is not None, "the importer calls prepare() before apply()"
        topic_ids = [topic.id for topic in self.topics]
        ids = sorted({row.contact_id for row in consenting})
        known = {
            (state.contact_id, state.topic_id): state
            for state in session.scalars(
                select(Consent).where(
                    _among(session, Consent.contact_id, ids), Consent.topic_id.in_(topic_ids)
                )
            )
        }
        refusals = self._refusals(session, known)
        evidence = {
            "source": self.proof.source,
            "date": self.proof.collected_on.isoformat(),
            "text_version": self.text.sha256,
            "file": self.file,
        }
        if self.declared_by:
            evidence["declared_by"] = self.declared_by
        written: dict[tuple[int, int], Change] = {}
        for row in consenting:
            refused = []
            for topic in self.topics:
                key = (row.contact_id, topic.id)
                current = known.get(key)
                if key in written or (
                    current is not None and current.state is ConsentState.GRANTED
                ):
                    outcome.consents_skipped += 1
                    continue
                if key in refusals:
                    action, at = refusals[key]
                    day = at.astimezone(BERLIN).date().isoformat()
                    refused.append(f"{REFUSALS[action]} on {day} ({topic.slug})")
                    outcome.consents_skipped += 1
                    continue
                written[key] = Change(row.contact_id, topic, current, evidence | {"line": row.line})
            if refused:
                outcome.notes.append(
                    RowNote(row.line, "consent not imported: " + "; ".join(refused))
                )
        # Two statements for the batch; a conflict surfaces here, inside the importer's savepoint.
        record_many(
            session,
            list(written.values()),
            action=Action.IMPORTED,
            origin=self.origin,
            now=self.now,
            text=self.text,
            granted_at=self.proof.since,
        )
        outcome.consents_imported += len(written)
        return outcome

    def _refusals(
        self, session: Session, known: dict[tuple[int, int], Consent]
    ) -> dict[tuple[int, int], tuple[Action, datetime]]:
        """The latest withdrawal or objection since the proof date, per (contact, topic)."""
        # Only a pair with a state can have one (every ledger change leaves a state row), and a
        # granted pair is skipped anyway.
        ids = sorted(
            {cid for (cid, _tid), s in known.items() if s.state is not ConsentState.GRANTED}
        )
        if not ids:
            return {}
        found = session.execute(
            select(
                ConsentEntry.contact_id, ConsentEntry.topic_id, ConsentEntry.action, ConsentEntry.at
            )
            .where(
                _among(session, ConsentEntry.contact_id, ids),
                ConsentEntry.topic_id.in_([topic.id for topic in self.topics]),
                ConsentEntry.action.in_(tuple(REFUSALS)),
                ConsentEntry.at >= self.proof.since,
            )
            .order_by(ConsentEntry.at, ConsentEntry.id)
        )
        latest: dict[tuple[int, int], tuple[Action, datetime]] = {}
        for contact_id, topic_id, action, at in found:
            latest[(contact_id, topic_id)] = (Action(action), at)
        return latest


def consent_import(
    session: Session,
    proof: ConsentProof | None,
    *,
    reference: str,
    file: str,
    now: datetime,
    declared_by: str | None = None,
) -> ConsentImport | None:
    """The extension for ``import_contacts``; None without a proof (then a consent column is
    refused by the importer)."""
    if proof is None:
        return None
    return ConsentImport(
        session, proof, reference=reference, file=file, now=now, declared_by=declared_by
    )
