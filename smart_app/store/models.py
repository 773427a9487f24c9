"""Server-side state. Everything that could identify a patient is encrypted at rest."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from smart_app.store.task_status import CLOSED, LEGACY, OPEN


class Base(DeclarativeBase):
    pass


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return secrets.token_urlsafe(24)  # 192 bits


class LaunchRecord(Base):
    """One SMART launch: pending (authorize sent) -> active (token held) -> ended.

    ``id`` is the opaque handle in the app's URLs (/l/<id>/...); ``state`` is what
    went to the EHR. ``browser_id`` binds the record to the browser session that
    started it, so another browser (or a guessed id) never sees it.
    """

    __tablename__ = "launch"
    __table_args__ = (Index("ix_launch_expires", "expires_at"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    state: Mapped[str] = mapped_column(String(128), unique=True, index=True)
    browser_id: Mapped[str] = mapped_column(String(64), index=True)
    iss: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(16), default="ehr")  # ehr | standalone
    status: Mapped[str] = mapped_column(String(16), default="pending")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Pending stage: PKCE verifier + nonce + launch param, encrypted.
    pending_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Active stage: token response (access/refresh/id_token), encrypted.
    tokens_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Context read from the EHR (patient, encounter, site, user), encrypted.
    context_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Working state of the visit (screening result, referral choices), encrypted.
    data_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # Non-PHI: why a launch failed, shown to the user.
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Set by quick exit: until then a relaunch by the same user for the same patient and encounter may
    # continue this launch's screening (smart_app/launch/resume.py); the purge keeps its data only that long.
    resumable_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Keyed HMAC of (iss, EHR user) set at /callback: "same user?" when a browser signs in again, without
    # decrypting every other launch's context (no user id in clear; NULL for older rows: decrypted then).
    user_tag: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # The keyed HMACs of the launch's patient and encounter that its referrals, screen marks and follow-ups carry
    # (smart_app/launch/visit_memory.py), set with the context: a page reads the patient's open follow-ups and the
    # visit's referral in the statement that reads the launch. NULL for launches made before (read separately).
    patient_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    encounter_key: Mapped[str | None] = mapped_column(String(64), nullable=True)


class UsedCode(Base):
    """Authorization codes already exchanged: a replayed callback is refused."""

    __tablename__ = "used_code"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class UsedJti(Base):
    """jti values of our own client assertions (never reuse one)."""

    __tablename__ = "used_jti"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


# -- Chart write-back (smart_app/outbox/) and the social-work queue -------------------------------
# The stored spellings of an open referral's status (the Task codes and the older words that read as them), as the
# queue's and the alerts' open-referral conditions list them: a partial index over them serves those conditions.
OPEN_STORED = tuple(sorted(set(OPEN) | {old for old, new in LEGACY.items() if new in OPEN}))
OPEN_STORED_SQL = "status IN (" + ", ".join(f"'{s}'" for s in OPEN_STORED) + ")"
# The stored spellings of a closed referral's status; every other status is open (the queue's "open" filter). The
# closed referrals are counted per cell in ``referral_cell``; the rest, the queue's working set, are read through a
# partial index over NOT closed (ix_referral_queue_open).
CLOSED_STORED = tuple(sorted(set(CLOSED) | {old for old, new in LEGACY.items() if new in CLOSED}))
NOT_CLOSED_SQL = "status NOT IN (" + ", ".join(f"'{s}'" for s in CLOSED_STORED) + ")"
# What the queue reads of a referral to count and filter it, carried by its partial indexes (index-only reads).
QUEUE_COLUMNS = ["ehr", "iss", "route_kind", "route_team", "site_keyset", "status", "urgent", "due_at",
                 "first_contact_at", "assignee", "site_name", "profile", "program_keys", "created_at"]
# Open, urgent and never contacted: the overdue banner's candidates (a few in a hospital, whatever the year's size).
OPEN_URGENT_SQL = OPEN_STORED_SQL + " AND urgent IS TRUE AND first_contact_at IS NULL"
PROGRAMS_UNINDEXED_SQL = "program_keys IS NULL"


class ReferralRecord(Base):
    """One consented referral: what social work follows up. Patient details are encrypted;
    site, urgency and status are not PHI on their own and stay queryable."""

    __tablename__ = "referral"
    # The queue filters by EHR and sorts by age (smart_app/worklist/queue.py): the index walks one EHR's
    # referrals in age order, so a first page of the oldest stops early.
    __table_args__ = (Index("ix_referral_status_created", "status", "created_at"),
                      Index("ix_referral_iss_created", "iss", "created_at"),
                      Index("ix_referral_ehr_route", "ehr", "route_kind", "route_team"),
                      Index("ix_referral_ehr_assignee", "ehr", "assignee"),
                      # The queue's page in age order (triage within each tier, oldest, newest first): an ordered
                      # walk that stops once the page is full (smart_app/worklist/queue.py ``Queue._page``).
                      Index("ix_referral_created", "created_at", "id"),
                      # The open referrals with every column the alert counts (/readyz, /metrics) and the queue's
                      # overdue banner read: those counts scan this small index, not the table
                      # (docs/decisions/0012-queue-at-volume.md).
                      Index("ix_referral_open_route", "ehr", "route_kind", "route_team",
                            postgresql_include=["status", "urgent", "first_contact_at", "created_at", "due_at",
                                                "assignee", "iss", "id"],
                            postgresql_where=text(OPEN_STORED_SQL), sqlite_where=text(OPEN_STORED_SQL)),
                      # The queue's working set (every referral not closed) in age order with what it counts and
                      # filters by: its live counts read this index alone, and its pages walk it and stop once full
                      # (docs/decisions/0015-queue-counts-kept-per-cell.md).
                      Index("ix_referral_queue_open", "created_at", "id", postgresql_include=QUEUE_COLUMNS,
                            postgresql_where=text(NOT_CLOSED_SQL), sqlite_where=text(NOT_CLOSED_SQL)),
                      # The same working set by the route into a queue: the covered site key set, the route (the
                      # unrouted queue, a team); the live counts read the user's share of it from these alone.
                      Index("ix_referral_open_keyset", "site_keyset", postgresql_include=QUEUE_COLUMNS,
                            postgresql_where=text(NOT_CLOSED_SQL), sqlite_where=text(NOT_CLOSED_SQL)),
                      Index("ix_referral_open_reach", "route_kind", "route_team", postgresql_include=QUEUE_COLUMNS,
                            postgresql_where=text(NOT_CLOSED_SQL), sqlite_where=text(NOT_CLOSED_SQL)),
                      # The overdue banner on every queue page reads its candidates from this alone.
                      Index("ix_referral_open_urgent", "ehr",
                            postgresql_include=["iss", "route_kind", "route_team", "site_keyset", "due_at",
                                                "created_at", "status", "id"],
                            postgresql_where=text(OPEN_URGENT_SQL), sqlite_where=text(OPEN_URGENT_SQL)),
                      # "Mine" among the closed referrals the cells count (a social worker's own caseload).
                      Index("ix_referral_assignee_created", "assignee", "created_at"),
                      # The referrals an older version stored without their program index: the queue looks for
                      # them every few minutes, and this (empty once they are indexed) answers without reading
                      # the table.
                      Index("ix_referral_programs_unindexed", "id", postgresql_where=text(PROGRAMS_UNINDEXED_SQL),
                            sqlite_where=text(PROGRAMS_UNINDEXED_SQL)))

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    # One referral per launch: a unique index, so concurrent consent POSTs cannot make a second.
    launch_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True, unique=True)
    iss: Mapped[str] = mapped_column(String(512))
    profile: Mapped[str] = mapped_column(String(512))  # EHR profile name or absolute path
    site: Mapped[str | None] = mapped_column(String(64), nullable=True)
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    # FHIR Task.status as the SDOH Clinical Care IG uses it (smart_app/store/task_status.py).
    status: Mapped[str] = mapped_column(String(16), default="requested")
    status_by: Mapped[str | None] = mapped_column(String(256), nullable=True)
    status_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Patient name/MRN, programs, safe-contact choice, clinician: encrypted (no screening answers).
    summary_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    # The encounter's site as the EHR names it (Location name, else serviceProvider name): not PHI.
    site_name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    # Keyed HMACs of (iss, patient id) and (iss, encounter id): "seen before?" without storing either id.
    patient_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    encounter_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    first_contact_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # The short code the chart note carries (fhir.builders.reference_code of the id): social work searches by it.
    reference_code: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)
    # Keyed HMAC of the patient's MRN at consent (smart_app/worklist/search.py): search by MRN without storing it.
    # NULL: its summary could not be read when `db upgrade` filled the column (cannot be found by MRN);
    # "NONE": the launch gave no MRN.
    mrn_key: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    # The warm hand-off at the bedside (smart_app/store/handoff.py): NULL = not offered, else "offered" or how the
    # call ended. Not PHI on its own, like ``urgent``; who was called and when are in ``summary_enc``.
    handoff: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # The route given at creation (smart_app/worklist/routing.py): the EHR identity (not the raw iss), the kind
    # (coverage | fallback | unrouted) and the team id. Not PHI; the queue and the unrouted count filter on them.
    # Referrals made before these columns are routed by `db upgrade` (migration 0014, smart_app/worklist/backfill.py);
    # NULL only for one an older app version wrote since (scoped by iss and site keys, as then).
    ehr: Mapped[str | None] = mapped_column(String(128), nullable=True)
    route_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    route_team: Mapped[str | None] = mapped_column(String(128), nullable=True)
    # The keys of its referral_program rows, sorted and joined ("" for none): the queue counts per program from
    # the referral row alone. NULL: not indexed yet (a referral made before the program index).
    program_keys: Mapped[str | None] = mapped_column(Text, nullable=True)
    # When the first contact is due (smart_app/worklist/due.py), set at creation from the urgency and the program's
    # hours. NULL: made before due times (the queue counts the urgency's time from created_at, around the clock).
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # Who works it: the social worker's fhirUser reference as the EHR gave it (staff, not the patient), their name
    # encrypted like ReferralEvent.by_name_enc. NULL: nobody has taken it.
    assignee: Mapped[str | None] = mapped_column(String(256), nullable=True)
    assignee_name_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    assigned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # How social work closed it (smart_app/store/closing.py): a plain code from a short list, not PHI on its own.
    closing_outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    closing_attempts: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Its set of site keys (``referral_site``) as one value: md5 of the keys, sorted, one a line. Kept by a
    # PostgreSQL trigger on ``referral_site`` (smart_app/store/queue_cells.py), so the queue's scope is a test on the
    # referral row (``site_keyset`` rows name the keys of each set). NULL: no site keys, or not PostgreSQL.
    site_keyset: Mapped[str | None] = mapped_column(String(32), nullable=True)


class SocialWorkerSeen(Base):
    """A social worker the queue has seen for an EHR, for "Hand over to…": the fhirUser reference, the name
    (encrypted) and the routing teams they worked then. Staff only, never a patient."""

    __tablename__ = "worklist_colleague"
    __table_args__ = (UniqueConstraint("ehr", "reference", name="uq_worklist_colleague"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ehr: Mapped[str] = mapped_column(String(128), index=True)
    reference: Mapped[str] = mapped_column(String(256))
    name_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    teams: Mapped[str] = mapped_column(Text, default="")  # team ids, sorted, joined by commas
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReferralSite(Base):
    """Every key the EHR gave the referral's site (``Location/<id>``, ``Organization/<id>``, identifier
    ``system|value``): a social worker's coverage is matched against these (smart_app/worklist/scope.py)."""

    __tablename__ = "referral_site"
    # (key, referral_id): the queue's scope test ("a key this user covers") is answered from the index alone.
    __table_args__ = (UniqueConstraint("referral_id", "key", name="uq_referral_site"),
                      Index("ix_referral_site_key_referral", "key", "referral_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    referral_id: Mapped[str] = mapped_column(String(64), ForeignKey("referral.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(512))


class SiteKeyset(Base):
    """The site keys of each ``referral.site_keyset`` value: which sets a social worker's coverage reaches."""

    __tablename__ = "site_keyset"

    keyset: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(String(512), primary_key=True, index=True)


class ReferralCell(Base):
    """How many closed referrals share one value of everything the queue counts and scopes by, per month
    (``grain`` "m") and per day ("d") of ``created_at`` (UTC). Kept by PostgreSQL triggers in the transaction of
    every write to ``referral`` (smart_app/store/queue_cells.py); the queue counts the closed referrals from here
    and the others live. NULLs are stored as "" (``program_keys``: "?"), so the key has no NULL."""

    __tablename__ = "referral_cell"
    __table_args__ = (Index("ix_referral_cell_keyset", "site_keyset", "grain", "bucket"),
                      Index("ix_referral_cell_route", "route_kind", "route_team", "grain", "bucket"))

    grain: Mapped[str] = mapped_column(String(1), primary_key=True)
    bucket: Mapped[date] = mapped_column(Date, primary_key=True)
    ehr: Mapped[str] = mapped_column(String(128), primary_key=True)
    iss: Mapped[str] = mapped_column(String(512), primary_key=True)
    route_kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    route_team: Mapped[str] = mapped_column(String(128), primary_key=True)
    site_keyset: Mapped[str] = mapped_column(String(32), primary_key=True)
    assigned: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    urgent: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    status: Mapped[str] = mapped_column(String(16), primary_key=True)
    site_name: Mapped[str] = mapped_column(String(256), primary_key=True)
    profile: Mapped[str] = mapped_column(String(512), primary_key=True)
    program_keys: Mapped[str] = mapped_column(Text, primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)


class ReferralProgram(Base):
    """The programs a referral names, so the queue filters and sorts by program without decrypting every
    referral's summary (smart_app/worklist/scope.py ``program_rows``; ``referral.program_keys`` lists the same
    keys for counting). ``key`` is a keyed HMAC of the program (equal programs group in SQL, no name in clear);
    ``program_enc`` holds its id and name, encrypted, and is decrypted once per distinct key. A referral naming no
    program has one row with key ``NONE`` and nothing encrypted; a referral with no row (stored before migration
    0009) is indexed from its summary when a queue first finds it."""

    __tablename__ = "referral_program"
    __table_args__ = (UniqueConstraint("referral_id", "key", name="uq_referral_program"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    referral_id: Mapped[str] = mapped_column(String(64), ForeignKey("referral.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(64))
    program_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class SavedQueueFilter(Base):
    """A social worker's saved queue view: filter values and sort (site and program names, statuses; never a
    search, never a patient detail), keyed by a keyed HMAC of (EHR, user) so no user id is stored in clear."""

    __tablename__ = "worklist_saved_filter"
    __table_args__ = (UniqueConstraint("user_tag", "query", name="uq_worklist_saved_filter"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_tag: Mapped[str] = mapped_column(String(64), index=True)
    query: Mapped[str] = mapped_column(String(1024))  # the view's query string, as the queue's links carry it
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ContactAttempt(Base):
    """One contact attempt by social work. Channel, outcome, note and who: encrypted together."""

    __tablename__ = "referral_contact"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    referral_id: Mapped[str] = mapped_column(String(64), ForeignKey("referral.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    by_reference: Mapped[str | None] = mapped_column(String(256), nullable=True)
    detail_enc: Mapped[bytes] = mapped_column(LargeBinary)


class PatientMark(Base):
    """"This patient was screened here on <date>": what a later launch may show at the gate. No answers,
    no score; keyed HMACs only. Deleted after the memory window (smart_app/worklist/retention.py)."""

    __tablename__ = "patient_mark"
    __table_args__ = (Index("ix_patient_mark_key_at", "patient_key", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    patient_key: Mapped[str] = mapped_column(String(64))
    encounter_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # screen
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReferralEvent(Base):
    """Audit trail of social-work status changes: who, when, from what to what. An assignment (taken, handed over:
    smart_app/worklist/assign.py) is an event too: ``assignee`` names who has it now, the status unchanged."""

    __tablename__ = "referral_event"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    referral_id: Mapped[str] = mapped_column(String(64), ForeignKey("referral.id"), index=True)
    from_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_status: Mapped[str] = mapped_column(String(16))
    by_reference: Mapped[str | None] = mapped_column(String(256), nullable=True)
    by_name_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    assignee: Mapped[str | None] = mapped_column(String(256), nullable=True)  # fhirUser reference (staff)


class OutboxItem(Base):
    """One chart write, stored before it is sent (smart_app/outbox/).

    status: pending -> sending (claimed, with a lease) -> written | failed | check; a failed write is
    kept; ``check`` = the outcome could not be known ("check the chart", for a person).
    ``last_error`` and ``label_detail`` never hold PHI (HTTP status, reason class, label codes).
    """

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("identifier_system", "identifier_value", name="uq_outbox_identifier"),
        Index("ix_outbox_due", "status", "next_attempt_at"),
        # The rows in flight by claim token: a claim finds the rows it just took (and their referrals' siblings)
        # here instead of reading every row ever written (docs/decisions/0013-a-year-of-data.md).
        Index("ix_outbox_in_flight", "claimed_by", postgresql_where=text("status = 'sending'"),
              sqlite_where=text("status = 'sending'")),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The referral the write belongs to, or a launch's neutral check-in record key (no referral behind it,
    # smart_app/writeback/checkin.py): the rows of one key are sent together, so no foreign key.
    referral_id: Mapped[str] = mapped_column(String(64), index=True)
    launch_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    iss: Mapped[str] = mapped_column(String(512))
    profile: Mapped[str] = mapped_column(String(512))  # EHR profile name or absolute path (profile.ref)
    mode: Mapped[str] = mapped_column(String(16), default="single")  # single | transaction
    kind: Mapped[str] = mapped_column(String(64))  # FHIR resource type
    # create: conditional create of ``resource_enc``; status: set the status of the resource the row
    # ``depends_on`` names to the one in ``resource_enc`` (closed loop, smart_app/outbox/closed_loop.py).
    operation: Mapped[str] = mapped_column(String(16), default="create", server_default="create")
    identifier_system: Mapped[str] = mapped_column(String(256))
    identifier_value: Mapped[str] = mapped_column(String(256))
    full_url: Mapped[str] = mapped_column(String(128))
    depends_on: Mapped[str] = mapped_column(Text, default="{}")  # JSON urn -> [kind, required]
    resource_enc: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=10)
    final_retry: Mapped[bool] = mapped_column(Boolean, default=False)  # the one retry after a refusal used
    # The last send may have reached the EHR (timeout after sending, reset, worker gone mid-send): where the
    # EHR does not honour If-None-Exist, the next try searches first and never re-sends blindly.
    outcome_unknown: Mapped[bool] = mapped_column(Boolean, default=False)
    label_attempts: Mapped[int] = mapped_column(Integer, default=0)  # bounded read-back
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    server_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    server_version: Mapped[str | None] = mapped_column(String(64), nullable=True)
    label_status: Mapped[str | None] = mapped_column(String(16), nullable=True)  # ok | flagged | unverified
    label_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    written_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# -- CDS Hooks and the program report ----------------------------------------------
class CdsJti(Base):
    """jti of every CDS Hooks request JWT accepted (CDS Hooks 2.0 "Trusting CDS Clients": the
    jti protects against replay); kept until the token's exp has passed."""

    __tablename__ = "cds_jti"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256(iss + " " + jti)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class CdsCard(Base):
    """A check-in card we returned: its uuid (the EHR's feedback names it), the site and month it
    counts for, and its outcome. Nothing about the patient."""

    __tablename__ = "cds_card"

    uuid: Mapped[str] = mapped_column(String(64), primary_key=True)
    service: Mapped[str] = mapped_column(String(64))
    site: Mapped[str] = mapped_column(String(64))
    month: Mapped[str] = mapped_column(String(7))
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)  # accepted | overridden
    ehr: Mapped[str | None] = mapped_column(String(512), nullable=True)  # EHR identity (config/ehrs.py)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class ReportEvent(Base):
    """De-identified program event (smart_app/report/events.py): one row per counted step. No patient,
    launch, referral or user id and no timestamp finer than the month, so it can be kept after the
    patient data is purged and past reports do not change."""

    __tablename__ = "report_event"
    __table_args__ = (Index("ix_report_event_month", "month", "site"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    month: Mapped[str] = mapped_column(String(7))  # YYYY-MM of the screen / referral / card
    site: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    instrument: Mapped[str] = mapped_column(String(32), default="")
    language: Mapped[str] = mapped_column(String(16), default="")
    # The EHR identity (config/ehrs.py) the step happened in, not the iss; NULL: counted before it was kept.
    ehr: Mapped[str | None] = mapped_column(String(512), nullable=True)


class ReferralDims(Base):
    """The report dimensions of a referral (month, instrument, language), so its later contact is
    counted with them; deleted with the referral (the counted events stay)."""

    __tablename__ = "referral_dims"

    referral_id: Mapped[str] = mapped_column(String(64), ForeignKey("referral.id", ondelete="CASCADE"),
                                             primary_key=True)
    # Indexed: a kept report counts again only the months a late change touched (smart_app/report/memo.py).
    month: Mapped[str] = mapped_column(String(7), index=True)
    site: Mapped[str] = mapped_column(String(64))
    instrument: Mapped[str] = mapped_column(String(32), default="")
    language: Mapped[str] = mapped_column(String(16), default="")
    contacted: Mapped[bool] = mapped_column(Boolean, default=False)


class ReportChange(Base):
    """A transaction that changed what the program report counts, and a month it changed (``YYYY-MM``; ``0000-00``:
    any month). Noted on PostgreSQL by statement triggers on ``referral``, ``referral_dims`` and ``report_event``
    (smart_app/report/memo.py), so a kept report is counted again only when a transaction it did not see changed a
    month it shows. ``xid``: the transaction's id (``pg_current_xact_id()``)."""

    __tablename__ = "report_change"

    # Month first: a kept report asks about the closed months, fewer rows than the open month's.
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    xid: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow,
                                         server_default=text("CURRENT_TIMESTAMP"))


class ReportMemo(Base):
    """A program report as counted and suppressed (smart_app/report/memo.py): its key (EHR, due times, period, the
    month it was read in), the snapshot its counts were read in (``pg_current_snapshot()`` as text) and when, and
    the numbers shown (JSON). No patient data: the report's own cells."""

    __tablename__ = "report_memo"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    snapshot: Mapped[str] = mapped_column(Text)
    made_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    body: Mapped[str] = mapped_column(Text)


class ReportMonth(Base):
    """One closed month of the program report as counted (smart_app/report/memo.py): per site, team and kind the
    counts (JSON), and per site and team the hours to each first contact (JSON), so a period's median is made from
    its months. Valid while the ``report_memo`` row of the same key (its snapshot) is; only the months a late
    change touched are counted again. No patient data: counts and hours, no ids."""

    __tablename__ = "report_month"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)
    counts: Mapped[str] = mapped_column(Text)
    hours: Mapped[str] = mapped_column(Text)


# -- Operations: access audit and worker heartbeat ---------------------------------
class AuditEvent(Base):
    """Append-only access audit (HIPAA 164.312(b)): who (fhirUser + iss), did what, when, on which instance.

    Written only through smart_app.ops.audit.record_audit; never updated; deleted only by the retention purge
    (tuning.audit_retention_days). On PostgreSQL the runtime role may only INSERT and SELECT, and a trigger lets
    only the table's owner delete rows past the retention floor or re-encrypt patient_enc (smart_app/ops/audit.py).
    Patient identifiers (and chart resource ids) are encrypted in ``patient_enc``; ``detail`` is short non-PHI
    text (a status change "new->contacted", a resource type).
    """

    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_event_at", "at"), Index("ix_audit_event_actor_at", "actor", "at"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
                                    autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    action: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(512), nullable=True)  # fhirUser as the EHR gave it
    iss: Mapped[str | None] = mapped_column(String(512), nullable=True)
    # The EHR identity of that iss (config/ehrs.py); NULL on rows from before it was kept: mapped from iss at read.
    ehr: Mapped[str | None] = mapped_column(String(512), nullable=True)
    instance: Mapped[str] = mapped_column(String(128))
    launch_ref: Mapped[str | None] = mapped_column(String(16), nullable=True)  # hash of the launch id (as logs)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    object_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # our own ids only (referral)
    detail: Mapped[str | None] = mapped_column(String(256), nullable=True)
    patient_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


class DirectoryImport(Base):
    """A referral directory import kept for every instance (``flask --app smart_app directory import``): the native
    YAML text under its name; each row is a new version, the newest row of each name is served, and every app process
    loads a newer version within ``tuning.directory_check_seconds`` (smart_app/store/directory.py). Programs and
    phone numbers only: no patient data."""

    __tablename__ = "directory_import"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), index=True)
    body: Mapped[str] = mapped_column(Text)
    services: Mapped[int] = mapped_column(Integer)
    imported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WorkerHeartbeat(Base):
    """One row per outbox worker process, stamped as it runs; /readyz reports the freshest stamp's age."""

    __tablename__ = "worker_heartbeat"

    worker_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    instance: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    beat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


# -- The forced response after a positive self-screen (smart_app/followup/) ---------------------------------------
class FollowupItem(Base):
    """An open response item: a self-administered screen (clinic tablet) came back positive, and the clinician has
    not yet recorded a response (smart_app/followup/items.py). One per launch. The patient and encounter are known
    only by keyed HMACs of (EHR identity, id), as referrals and screen marks are; what the social-work queue shows of
    the patient (name, MRN) is encrypted in ``summary_enc``. Site, codes and times are not PHI on their own."""

    __tablename__ = "followup_item"
    # The queue reads one EHR's open items in age order; a later launch reads one patient's open items.
    __table_args__ = (Index("ix_followup_ehr_status_opened", "ehr", "status", "opened_at"),
                      Index("ix_followup_patient_status", "patient_key", "status"))

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    # One item per launch: a unique index, so a repeated or concurrent call opens no second one.
    launch_id: Mapped[str] = mapped_column(String(64), unique=True)
    ehr: Mapped[str] = mapped_column(String(128))  # the EHR identity (config/ehrs.py), not the raw iss
    iss: Mapped[str] = mapped_column(String(512))
    patient_key: Mapped[str] = mapped_column(String(64))
    encounter_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    site: Mapped[str] = mapped_column(String(64))  # the report's site key (smart_app/report/events.py site_of)
    site_name: Mapped[str | None] = mapped_column(String(256), nullable=True)
    # Every key the EHR gave the encounter's site, JSON list (smart_app/worklist/scope.py referral_site_keys): the
    # queue's coverage and routing match these, as for referrals.
    site_keys: Mapped[str] = mapped_column(Text, default="[]")
    summary_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    month: Mapped[str] = mapped_column(String(7))  # the report month the item counts in (when it was opened)
    opened_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # A later launch for the patient in another encounter: this visit is over (the item may reach the queue).
    visit_ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open | recorded
    # The latest response (smart_app/followup/items.py RESPONSES); "not_safe_now" leaves the item open.
    response: Mapped[str | None] = mapped_column(String(32), nullable=True)
    responded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    responder_role: Mapped[str | None] = mapped_column(String(32), nullable=True)
    response_launch_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    first_response_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class KioskSession(Base):
    """A patient's self-administered screen on a clinic tablet, for one launch (smart_app/kiosk/).

    Nothing here names the patient: the tablet's cookie holds a random token whose keyed hash is ``tablet_hash``;
    the pairing code and the hand-back PIN are kept only as keyed hashes; the answers given so far are encrypted
    and deleted when the screen is stored in the launch, abandoned or locked. The row goes with its launch.
    """

    __tablename__ = "kiosk_session"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    launch_id: Mapped[str] = mapped_column(String(64), ForeignKey("launch.id", ondelete="CASCADE"), index=True)
    mode: Mapped[str] = mapped_column(String(8))  # device | paired
    # waiting | answering | finished | handed_back | exited | locked
    status: Mapped[str] = mapped_column(String(16), default="waiting")
    code_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    code_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    tablet_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    pin_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pin_tries: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    progress_enc: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
