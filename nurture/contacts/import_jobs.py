"""Imports the worker runs: an uploaded CSV, its mapping, its progress and its report.

Lifecycle: ``create_job`` stores the file (state ``queued``, ``mapping`` SQL NULL = awaiting
mapping; no worker touches it yet) → ``set_mapping`` validates and sets the mapping, which is
what queues it → ``run_next`` claims it (``running``, ``started_at``), imports with a commit per
batch that also writes the progress, and ends ``done`` with counts and the error report, or
``failed`` with a ``problem``.

``started_at`` doubles as the lease: every progress write names the ``started_at`` its worker
claimed with, so when a job left ``running`` by a dead worker is re-queued and claimed anew, a
worker that was only slow notices at its next batch and stops instead of racing the new run.
A re-run is harmless anyway: both importers are idempotent.

Consent with a proof reference (``nurture.consent.imported``) has no column of its own yet: the
proof the person mapping declared is kept in ``mapping`` under the reserved key ``"@consent"``
(with "declared_by"), and the run adds its outcome there ("outcome": counts and the first
notes). A file with a column literally named "@consent" is refused at upload.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, delete, null, select, update
from sqlalchemy.orm import Session, defer

from nurture.auth.models import User
from nurture.consent.imported import (
    ConsentImport,
    ConsentProof,
    ConsentProofError,
    check_mapping,
    check_proof,
)
from nurture.contacts.activity_import import (
    EVENT_FIELDS,
    import_activities,
    resolve_event_mapping,
    suggest_event_mapping,
)
from nurture.contacts.custom_fields import Definitions
from nurture.contacts.importer import (
    ImportFileError,
    ImportReport,
    check_extension_targets,
    errors_csv,
    import_contacts,
    importable_fields,
    read_csv,
    suggest_mapping,
)
from nurture.contacts.models import IMPORT_KINDS, ImportJob
from nurture.db import Database, claim
from nurture.errors import N_

log = logging.getLogger(__name__)

SOURCE = "import"
# A job running this long was left by a dead worker: even 16 MB of rows take minutes.
STALE_AFTER = timedelta(minutes=30)
KEEP_FILES = timedelta(days=30)
# An upload nobody mapped is abandoned after this; its row and file go.
KEEP_UNMAPPED = timedelta(days=7)
SAMPLE_ROWS = 3
# The key of the consent proof in ``ImportJob.mapping``; no column may carry this name.
CONSENT_KEY = "@consent"
NOTES_KEPT = 100
INTERNAL_PROBLEM = N_(
    "The import stopped because of an internal error. Rows imported before it are kept; "
    "the worker's log has the details."
)
PROGRESS_COLUMNS = (
    ImportJob.id,
    ImportJob.kind,
    ImportJob.state,
    ImportJob.mapping,
    ImportJob.rows_total,
    ImportJob.rows_done,
    ImportJob.created,
    ImportJob.updated,
    ImportJob.unchanged,
    ImportJob.failed,
    ImportJob.problem,
)


class JobLostError(RuntimeError):
    """The job was re-queued (this worker was taken for dead) while this worker ran it."""


@dataclass(frozen=True)
class ShownError:
    line: str
    field: str
    message: str


# -- creating and mapping -----------------------------------------------------------------


def create_job(
    session: Session, *, kind: str, filename: str, data: bytes, user: User | None, now: datetime
) -> ImportJob:
    """Store an uploaded file as a job awaiting its mapping; unreadable files store nothing."""
    if kind not in IMPORT_KINDS:
        raise ImportFileError(N_("Unknown kind of import %(kind)s."), kind=kind)
    header, rows = read_csv(data)
    if CONSENT_KEY in header:
        raise ImportFileError(
            N_("The file has a column named %(column)s, a name nurture reserves. Rename it."),
            column=CONSENT_KEY,
        )
    total = sum(1 for _row in rows)
    if not total:
        raise ImportFileError(N_("The file has a header but no data rows."))
    job = ImportJob(
        kind=kind,
        state="queued",
        filename=(filename or "upload.csv")[-255:],
        data=data,
        # SQL NULL, not JSON null: the claim's "mapping IS NOT NULL" must see it as unmapped.
        mapping=null(),
        created_by_id=user.id if user is not None else None,
        created_at=now,
        rows_total=total,
    )
    session.add(job)
    session.flush()
    return job


def awaiting_mapping(job: ImportJob) -> bool:
    return job.state == "queued" and job.mapping is None


def target_fields(kind: str, custom_fields: Definitions) -> list[str]:
    """What a column of a file of ``kind`` can be mapped to."""
    return importable_fields(custom_fields) if kind == "contacts" else list(EVENT_FIELDS)


def preview(job: ImportJob) -> tuple[list[str], dict[str, list[str]]]:
    """The header and the first few values of every column, for the mapping page."""
    header, rows = read_csv(job.data)
    samples: dict[str, list[str]] = {column: [] for column in header}
    for count, (_line, row) in enumerate(rows):
        if count == SAMPLE_ROWS:
            break
        for column in header:
            samples[column].append(row.get(column, ""))
    return header, samples


def suggested_mapping(job: ImportJob, custom_fields: Definitions) -> dict[str, str]:
    header, _rows = read_csv(job.data)
    if job.kind == "contacts":
        return suggest_mapping(header, custom_fields)
    return suggest_event_mapping(header)


def _check_contact_mapping(
    header: list[str], mapping: dict[str, str], custom_fields: Definitions
) -> None:
    # The importer's rules and messages, checked now so that the person mapping sees them.
    allowed = set(importable_fields(custom_fields))
    for column, target in mapping.items():
        if target not in allowed:
            raise ImportFileError(
                N_("The mapping names %(field)s, which is not a contact field to import."),
                field=target,
            )
        if column not in header:
            raise ImportFileError(
                N_("The mapping names the column %(column)s, which the file does not have."),
                column=column,
            )
    targets = list(mapping.values())
    for target in targets:
        if targets.count(target) > 1:
            raise ImportFileError(N_("Two columns are mapped to %(field)s."), field=target)
    if "email" not in targets:
        raise ImportFileError(N_("No column is mapped to the email address."))


def set_mapping(
    session: Session,
    job: ImportJob,
    mapping: dict[str, str],
    custom_fields: Definitions,
    *,
    proof: ConsentProof | None = None,
    declared_by: str | None = None,
    now: datetime | None = None,
) -> None:
    """Validate ``mapping`` (column → field; empty field = ignore) and queue the job.

    ``proof`` (contacts only; ``now`` required with it) is the consent proof reference the
    person mapping declares for the file, ``declared_by`` who they are ("user:<id>").
    """
    if not awaiting_mapping(job):
        raise ImportFileError(N_("This import is already queued; its mapping cannot change."))
    chosen = {column: target for column, target in mapping.items() if target}
    header, _rows = read_csv(job.data)
    if job.kind == "contacts":
        _check_contact_mapping(header, chosen, custom_fields)
        if proof is None:
            check_extension_targets(chosen.values(), None)
        else:
            assert now is not None, "checking a proof needs the time"
            check_proof(session, proof, now=now)
            check_mapping(chosen.values(), proof)
    else:
        if proof is not None:
            raise ConsentProofError(N_("Only a file of contacts can carry consent."))
        resolve_event_mapping(header, chosen)
    stored: dict[str, Any] = dict(chosen)
    if proof is not None:
        stored[CONSENT_KEY] = proof.to_json() | {"declared_by": declared_by}
    job.mapping = stored
    session.flush()


def columns_of(mapping: dict[str, Any] | None) -> dict[str, str]:
    """The column → field part of a job's mapping."""
    return {k: v for k, v in (mapping or {}).items() if k != CONSENT_KEY}


def consent_of(job: ImportJob) -> ConsentProof | None:
    """The consent proof declared for the job, if any."""
    stored = (job.mapping or {}).get(CONSENT_KEY)
    return ConsentProof.from_json(stored) if stored else None


@dataclass(frozen=True)
class ConsentOutcome:
    imported: int
    skipped: int
    notes: list[tuple[int, str]]
    notes_total: int


def consent_outcome(job: ImportJob) -> ConsentOutcome | None:
    """What the run did with the job's consent proof; None before the run or without one."""
    outcome = ((job.mapping or {}).get(CONSENT_KEY) or {}).get("outcome")
    if not outcome:
        return None
    return ConsentOutcome(
        imported=outcome["imported"],
        skipped=outcome["skipped"],
        notes=[(int(line), str(message)) for line, message in outcome["notes"]],
        notes_total=outcome["notes_total"],
    )


def _with_outcome(mapping: dict[str, Any], report: ImportReport) -> dict[str, Any]:
    outcome = {
        "imported": report.consents_imported,
        "skipped": report.consents_skipped,
        "notes": [[note.line, note.message] for note in report.notes[:NOTES_KEPT]],
        "notes_total": len(report.notes),
    }
    return mapping | {CONSENT_KEY: mapping[CONSENT_KEY] | {"outcome": outcome}}


# -- reading ------------------------------------------------------------------------------


def recent_jobs(session: Session, *, limit: int = 50) -> list[tuple[ImportJob, str | None]]:
    """The newest jobs with their creator's email; files and reports are not loaded."""
    stmt = (
        select(ImportJob, User.email)
        .outerjoin(User, User.id == ImportJob.created_by_id)
        .options(defer(ImportJob.data), defer(ImportJob.errors_csv))
        .order_by(ImportJob.id.desc())
        .limit(limit)
    )
    return [(job, email) for job, email in session.execute(stmt).all()]


def get_job(session: Session, job_id: int, *, with_file: bool = False) -> ImportJob | None:
    """The job; its file (up to the request size limit) is loaded only when asked for."""
    options = [] if with_file else [defer(ImportJob.data)]
    return session.get(ImportJob, job_id, options=options)


def progress(session: Session, job_id: int) -> dict[str, Any] | None:
    """The job's state and counts as the progress poll reports them (one small query)."""
    found: Row[Any] | None = session.execute(
        select(*PROGRESS_COLUMNS).where(ImportJob.id == job_id)
    ).first()
    if found is None:
        return None
    job = found._mapping
    total = max(job["rows_total"], job["rows_done"])
    state = "mapping" if job["state"] == "queued" and job["mapping"] is None else job["state"]
    return {
        "id": job["id"],
        "kind": job["kind"],
        "state": state,
        "finished": state in ("done", "failed"),
        "rows_total": total,
        "rows_done": job["rows_done"],
        "percent": 100 if state == "done" else (job["rows_done"] * 100 // total if total else 0),
        "created": job["created"],
        "updated": job["updated"],
        "unchanged": job["unchanged"],
        "failed": job["failed"],
        "problem": job["problem"],
    }


def error_rows(job: ImportJob, *, limit: int = 100) -> list[ShownError]:
    """The first failed rows (line, field, message) of the stored error report."""
    text = job.errors_csv.removeprefix("\ufeff")
    if not text:
        return []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";")
    header = next(reader, [])
    try:
        at = [header.index(name) for name in ("line", "field", "message")]
    except ValueError:
        return []
    shown = []
    for cells in reader:
        if len(shown) == limit:
            break
        line, field, message = (_unquote(cells[i]) if i < len(cells) else "" for i in at)
        shown.append(ShownError(line, field, message))
    return shown


def _unquote(cell: str) -> str:
    # errors_csv puts a quote before formula-like cells for Excel; the page shows the text.
    return cell[1:] if cell[:1] == "'" and cell[1:2] in ("=", "+", "-", "@", "\t", "\r") else cell


# -- running --------------------------------------------------------------------------------


def requeue_stale(session: Session, *, now: datetime) -> int:
    """Put jobs a dead worker left ``running`` back in the queue; the caller commits."""
    result = session.execute(
        update(ImportJob)
        .where(ImportJob.state == "running", ImportJob.started_at < now - STALE_AFTER)
        .values(state="queued", started_at=None)
        .execution_options(synchronize_session=False)
    )
    moved = int(getattr(result, "rowcount", 0) or 0)
    if moved:
        log.warning("re-queued %d import job(s) left running by a dead worker", moved)
    return moved


def _claim(session: Session, *, now: datetime) -> int | None:
    ids = claim(
        session,
        ImportJob,
        where=[ImportJob.state == "queued", ImportJob.mapping.is_not(None)],
        values={
            "state": "running",
            "started_at": now,
            "finished_at": None,
            "rows_done": 0,
            "created": 0,
            "updated": 0,
            "unchanged": 0,
            "failed": 0,
            "errors_csv": "",
            "problem": "",
        },
        limit=1,
        order_by=[ImportJob.id],
    )
    return ids[0] if ids else None


def _write(session: Session, job_id: int, started_at: datetime, **values: Any) -> None:
    """Update our running job; JobLostError when another worker has taken it over."""
    result = session.execute(
        update(ImportJob)
        .where(
            ImportJob.id == job_id,
            ImportJob.state == "running",
            ImportJob.started_at == started_at,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if not getattr(result, "rowcount", 0):
        raise JobLostError(f"import job {job_id} was taken over by another worker")


def _counts(report: ImportReport) -> dict[str, int]:
    return {
        "rows_done": report.rows,
        "created": report.created,
        "updated": report.updated,
        "unchanged": report.unchanged,
        "failed": len(report.errors),
    }


def _import(
    session: Session,
    job: ImportJob,
    *,
    now: datetime,
    on_batch: Any,
    suppression_secret: str | None = None,
) -> ImportReport:
    mapping = columns_of(job.mapping)
    if job.kind == "contacts":
        proof = consent_of(job)
        extension = None
        if proof is not None:
            extension = ConsentImport(
                session,
                proof,
                reference=f"job-{job.id}",
                file=job.filename,
                now=now,
                declared_by=(job.mapping or {})[CONSENT_KEY].get("declared_by"),
            )
        return import_contacts(
            session,
            job.data,
            mapping=mapping,
            now=now,
            source=SOURCE,
            on_batch=on_batch,
            suppression_secret=suppression_secret,
            extension=extension,
        )
    return import_activities(
        session, job.data, mapping=mapping, now=now, source=SOURCE, on_batch=on_batch
    )


def run_job(
    db: Database,
    job_id: int,
    *,
    started_at: datetime,
    now_fn: Callable[[], datetime],
    suppression_secret: str | None = None,
) -> None:
    """Import a claimed job, committing progress per batch; the job ends done or failed."""
    session = db.session()
    try:
        job = session.get(ImportJob, job_id)
        assert job is not None
        # Read now: after the first batch's commit the job is expired, and touching it again
        # would load the whole file once more.
        mapping: dict[str, Any] = dict(job.mapping or {})

        def on_batch(report: ImportReport) -> None:
            _write(session, job_id, started_at, **_counts(report))
            session.commit()

        try:
            report = _import(
                session,
                job,
                now=started_at,
                on_batch=on_batch,
                suppression_secret=suppression_secret,
            )
        except ImportFileError as exc:
            session.rollback()
            problem = str(exc)
            _write(
                session, job_id, started_at, state="failed", problem=problem, finished_at=now_fn()
            )
            session.commit()
            return
        done: dict[str, Any] = {}
        if CONSENT_KEY in mapping:
            done["mapping"] = _with_outcome(mapping, report)
        _write(
            session,
            job_id,
            started_at,
            state="done",
            finished_at=now_fn(),
            errors_csv=errors_csv(report),
            **_counts(report),
            **done,
        )
        session.commit()
    except JobLostError:
        session.rollback()
        log.warning("import job %d was re-queued while this worker ran it; stopping", job_id)
    except Exception:
        session.rollback()
        try:
            _write(
                session,
                job_id,
                started_at,
                state="failed",
                problem=INTERNAL_PROBLEM,
                finished_at=now_fn(),
            )
            session.commit()
        except Exception:
            session.rollback()
            log.exception("could not mark import job %d as failed", job_id)
        raise
    finally:
        session.close()


def run_next(
    db: Database, *, now_fn: Callable[[], datetime], suppression_secret: str | None = None
) -> int | None:
    """Run the oldest mapped job, if any; returns its id (None: nothing was waiting)."""
    with db.session_scope() as session:
        now = now_fn()
        requeue_stale(session, now=now)
        job_id = _claim(session, now=now)
    if job_id is None:
        return None
    run_job(db, job_id, started_at=now, now_fn=now_fn, suppression_secret=suppression_secret)
    return job_id


def run_pending(
    db: Database,
    *,
    now_fn: Callable[[], datetime],
    budget_seconds: float = 60.0,
    suppression_secret: str | None = None,
) -> int:
    """The worker job: run jobs until none waits or the budget is used; how many ran."""
    deadline = time.monotonic() + budget_seconds
    ran = 0
    while (
        time.monotonic() < deadline
        and run_next(db, now_fn=now_fn, suppression_secret=suppression_secret) is not None
    ):
        ran += 1
    return ran


def purge_old_jobs(session: Session, *, now: datetime) -> int:
    """Clear the files of jobs finished over 30 days ago (their rows and reports stay, so the
    list keeps its history) and delete uploads nobody mapped within 7 days. The caller commits.
    """
    cleared = session.execute(
        update(ImportJob)
        .where(
            ImportJob.state.in_(("done", "failed")),
            ImportJob.finished_at < now - KEEP_FILES,
            ImportJob.data != b"",
        )
        .values(data=b"")
        .execution_options(synchronize_session=False)
    )
    dropped = session.execute(
        delete(ImportJob)
        .where(
            ImportJob.state == "queued",
            ImportJob.mapping.is_(None),
            ImportJob.created_at < now - KEEP_UNMAPPED,
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(cleared, "rowcount", 0) or 0) + int(getattr(dropped, "rowcount", 0) or 0)
