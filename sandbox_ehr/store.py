"""FHIR R4 resource store of the sandbox EHR (stdlib sqlite3, the ``SANDBOX_DB`` file).

Every resource is validated with the ``fhir.resources`` R4B model of its type before it is stored; the
stored JSON is what the client sent (plus ``id`` and ``meta.versionId``/``meta.lastUpdated``), so a read
returns the exact codings that were written (the app checks that its security labels survived).

Thread safety: one sqlite3 connection per thread (connections must not cross threads), WAL so readers
never block writers, and ``BEGIN IMMEDIATE`` for every write so concurrent writers serialise instead of
failing with "database is locked" half-way. ``Store.transaction()`` nests: a FHIR transaction Bundle runs
all its entries in one SQLite transaction and rolls all of them back on the first error.

Search runs the filters in Python over the resources of one type (see the notes at ``SEARCH_PARAMS``
below), narrowed first by an index (``fhir_search_key``) for the two searches the app repeats under load:
``identifier=system|value`` and ``patient``/``subject``. The filters still decide, so the index only has to
hold a superset of the matches. Supported parameters and modifiers are listed in ``SEARCH_PARAMS`` and
``sandbox_ehr/README.md``; unknown parameters are ignored and reported (``SearchResult.ignored``).
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from flask import Flask, current_app

# WAL with NORMAL: a commit is written to the log but not flushed to disk (the log is at each checkpoint). The
# sandbox is a test harness: a flush per write was most of a write's time under load, and losing the last writes on
# a power failure costs a test EHR nothing (WAL keeps the file consistent).
SYNCHRONOUS = "NORMAL"

DATA_DIR = Path(__file__).parent / "data"
ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fhir_resource (
    type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, last_updated TEXT NOT NULL,
    seq INTEGER NOT NULL, content TEXT NOT NULL, PRIMARY KEY (type, id));
CREATE TABLE IF NOT EXISTS fhir_history (
    type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, last_updated TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0, content TEXT, PRIMARY KEY (type, id, version));
CREATE TABLE IF NOT EXISTS fhir_seq (n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS fhir_search_key (
    type TEXT NOT NULL, key TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (type, key, id));
"""


# --- errors ------------------------------------------------------------------------------------------------

class StoreError(Exception):
    """A FHIR interaction failed; ``status`` and ``code`` (OperationOutcome issue type) go to the client."""

    status = 400
    code = "processing"

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if code is not None:
            self.code = code


class ResourceInvalid(StoreError):
    status = 400
    code = "invalid"


class ResourceNotFound(StoreError):
    status = 404
    code = "not-found"


class ResourceGone(StoreError):
    status = 410
    code = "deleted"


class PreconditionFailed(StoreError):
    status = 412
    code = "conflict"


# --- validation --------------------------------------------------------------------------------------------

def validate(resource: Any, expected_type: str | None = None) -> dict[str, Any]:
    """Check ``resource`` against its fhir.resources R4B model; raises ResourceInvalid with a readable message."""
    if not isinstance(resource, dict):
        raise ResourceInvalid("Body must be a JSON object (a FHIR resource)")
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise ResourceInvalid("Missing resourceType")
    if expected_type and rtype != expected_type:
        raise ResourceInvalid(f"resourceType {rtype} does not match the URL ({expected_type})")
    model = model_class(rtype)
    rid = resource.get("id")
    if rid is not None and (not isinstance(rid, str) or not ID_RE.match(rid)):
        raise ResourceInvalid("Resource id must be 1-64 characters of A-Z, a-z, 0-9, '-' and '.'")
    try:
        model.model_validate(resource)
    except Exception as exc:  # pydantic ValidationError or fhir.resources' own ValueError
        raise ResourceInvalid(f"Invalid {rtype}: {_validation_message(exc)}") from None
    return resource


def model_class(resource_type: str):
    from fhir.resources.R4B import get_fhir_model_class

    if not re.fullmatch(r"[A-Z][A-Za-z]{1,63}", resource_type or ""):
        raise ResourceInvalid(f"Unknown resource type {resource_type!r}", code="not-supported")
    try:
        cls = get_fhir_model_class(resource_type)
    except (ValueError, ImportError, AttributeError):
        raise ResourceInvalid(f"Unknown resource type {resource_type!r}", code="not-supported") from None
    from fhir.resources.R4B.resource import Resource

    # get_fhir_model_class also knows data types (Coding, HumanName...): only resources are resources.
    if not (isinstance(cls, type) and issubclass(cls, Resource)) or resource_type in ("Resource", "DomainResource"):
        raise ResourceInvalid(f"Unknown resource type {resource_type!r}", code="not-supported")
    return cls


def is_resource_type(name: str) -> bool:
    try:
        model_class(name)
    except ResourceInvalid:
        return False
    return True


def _validation_message(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            items = errors()
        except Exception:  # noqa: BLE001 - fall back to the plain text
            items = None
        if items:
            parts = []
            for err in items[:10]:
                loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
                msg = " ".join(str(err.get("msg", "")).split())
                parts.append(f"{loc}: {msg}" if loc else msg)
            more = f" (+{len(items) - 10} more)" if len(items) > 10 else ""
            return "; ".join(parts) + more
    return " ".join(str(exc).split())[:500]


# --- store -------------------------------------------------------------------------------------------------

@dataclass
class SearchResult:
    resources: list[dict[str, Any]]
    total: int
    ignored: list[str] = field(default_factory=list)


class Store:
    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()
        conn = sqlite3.connect(path, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA)
            if conn.execute("SELECT COUNT(*) FROM fhir_seq").fetchone()[0] == 0:
                conn.execute("INSERT INTO fhir_seq (n) VALUES (0)")
            if conn.execute("SELECT COUNT(*) FROM fhir_search_key").fetchone()[0] == 0:
                # A store written before the index existed: index what it holds.
                for rtype, rid, content in conn.execute("SELECT type, id, content FROM fhir_resource").fetchall():
                    _index(conn, rtype, rid, json.loads(content))
            conn.commit()
        finally:
            conn.close()

    # -- connections and transactions --------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves so nesting is explicit.
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
            self._local.conn = conn
            self._local.depth = 0
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One SQLite write transaction; nested calls join the outer one; any exception rolls all back."""
        conn = self._conn()
        if self._local.depth:
            self._local.depth += 1
            try:
                yield conn
            finally:
                self._local.depth -= 1
            return
        conn.execute("BEGIN IMMEDIATE")
        self._local.depth = 1
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")
        finally:
            self._local.depth = 0

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- reads -------------------------------------------------------------------------------------------
    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        """The current version; ResourceNotFound (404) or ResourceGone (410, deleted)."""
        row = self._conn().execute("SELECT content FROM fhir_resource WHERE type = ? AND id = ?",
                                   (resource_type, resource_id)).fetchone()
        if row:
            return json.loads(row[0])
        gone = self._conn().execute("SELECT 1 FROM fhir_history WHERE type = ? AND id = ? AND deleted = 1",
                                    (resource_type, resource_id)).fetchone()
        if gone:
            raise ResourceGone(f"{resource_type}/{resource_id} was deleted")
        raise ResourceNotFound(f"{resource_type}/{resource_id} is not known")

    def vread(self, resource_type: str, resource_id: str, version: str) -> dict[str, Any]:
        try:
            vid = int(version)
        except ValueError:
            raise ResourceNotFound(f"{resource_type}/{resource_id} has no version {version!r}") from None
        row = self._conn().execute(
            "SELECT content, deleted FROM fhir_history WHERE type = ? AND id = ? AND version = ?",
            (resource_type, resource_id, vid)).fetchone()
        if not row:
            raise ResourceNotFound(f"{resource_type}/{resource_id} has no version {version}")
        if row[1]:
            raise ResourceGone(f"{resource_type}/{resource_id} version {version} is a deletion")
        return json.loads(row[0])

    def exists(self, resource_type: str, resource_id: str) -> bool:
        return self._conn().execute("SELECT 1 FROM fhir_resource WHERE type = ? AND id = ?",
                                    (resource_type, resource_id)).fetchone() is not None

    def count(self, resource_type: str | None = None) -> int:
        if resource_type is None:
            return self._conn().execute("SELECT COUNT(*) FROM fhir_resource").fetchone()[0]
        return self._conn().execute("SELECT COUNT(*) FROM fhir_resource WHERE type = ?",
                                    (resource_type,)).fetchone()[0]

    def search(self, resource_type: str, params: dict[str, list[str] | str] | None = None) -> list[dict[str, Any]]:
        """Matching resources (``_count`` honoured as a limit, ``_offset`` as a skip)."""
        return self.search_page(resource_type, params).resources

    def search_page(self, resource_type: str, params: dict[str, list[str] | str] | None = None) -> SearchResult:
        """Matches, total before paging, and the parameters that were ignored (unknown to the sandbox)."""
        model_class(resource_type)
        norm = _normalise_params(params or {})
        count = _int_param(norm.pop("_count", None), default=None, name="_count")
        offset = _int_param(norm.pop("_offset", None), default=0, name="_offset") or 0
        sort = norm.pop("_sort", None)
        for control in ("_format", "_pretty", "_summary", "_elements", "_total", "_include", "_revinclude"):
            norm.pop(control, None)
        filters, ignored = _compile_filters(resource_type, norm)
        ids = None
        if "_id" in norm:
            ids = {v for value in norm["_id"] for v in value.split(",")}
        indexed = self._indexed_ids(resource_type, norm)
        if indexed is not None:
            ids = indexed if ids is None else ids & indexed
        sql = "SELECT content, last_updated, seq FROM fhir_resource WHERE type = ?"
        args: list[Any] = [resource_type]
        if ids is not None and len(ids) < 500:
            sql += f" AND id IN ({','.join('?' * len(ids))})"
            args.extend(sorted(ids))
        rows = self._conn().execute(sql, args).fetchall()
        matches = []
        for content, last_updated, seq in rows:
            resource = json.loads(content)
            if all(f(resource) for f in filters):
                matches.append((last_updated, seq, resource))
        ignored_sort = _sort(matches, sort)
        if ignored_sort:
            ignored.append(ignored_sort)
        total = len(matches)
        page = [r for _, _, r in matches][offset:]
        if count is not None:
            page = page[:count]
        return SearchResult(page, total, ignored)

    def _indexed_ids(self, resource_type: str, params: dict[str, list[str]]) -> set[str] | None:
        """Candidate ids from the index for an exact identifier or patient search; None = no narrowing."""
        keys: list[str] = []
        for value in params.get("identifier") or []:
            system, bar, code = value.partition("|")  # as the token matcher reads it
            if "," in value or (bar and not code):
                return None  # an OR list or a system-only search: no narrowing
            value_only = f"identifier-value:{code if bar else value}"
            keys.append(f"identifier:{system}|{code}" if bar and system else value_only)
        for name in ("patient", "subject"):
            for value in params.get(name) or []:
                if "," not in value and value:
                    keys.append(f"patient:{value.rstrip('/').split('/')[-1]}")
        if not keys:
            return None
        ids: set[str] | None = None
        for key in keys:  # repeated parameters AND
            found = {r[0] for r in self._conn().execute(
                "SELECT id FROM fhir_search_key WHERE type = ? AND key = ?", (resource_type, key)).fetchall()}
            ids = found if ids is None else ids & found
        return ids

    def history(self, resource_type: str, resource_id: str) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT content FROM fhir_history WHERE type = ? AND id = ? AND deleted = 0 ORDER BY version DESC",
            (resource_type, resource_id)).fetchall()
        return [json.loads(r[0]) for r in rows]

    # -- writes ------------------------------------------------------------------------------------------
    def create(self, resource: dict[str, Any], *, assign_id: str | None = None) -> dict[str, Any]:
        """Store a new resource under a server-assigned id (any client id is replaced, as FHIR create says)."""
        resource = dict(validate(resource))
        resource["id"] = assign_id or uuid.uuid4().hex
        with self.transaction():
            return self._write(resource, previous_version=0)

    def update(self, resource: dict[str, Any], *, if_match: str | None = None) -> dict[str, Any]:
        """Replace ``resource['id']`` (update-as-create when absent). ``if_match``: expected versionId."""
        resource = dict(validate(resource))
        if not resource.get("id"):
            raise ResourceInvalid("Update needs the resource id")
        with self.transaction() as conn:
            row = conn.execute("SELECT version FROM fhir_resource WHERE type = ? AND id = ?",
                               (resource["resourceType"], resource["id"])).fetchone()
            if if_match is not None and (row is None or str(row[0]) != str(if_match)):
                raise PreconditionFailed(
                    f"Version conflict: {resource['resourceType']}/{resource['id']} is not at version {if_match}",
                    status=412)
            previous = row[0] if row else self._last_history_version(conn, resource)
            return self._write(resource, previous_version=previous, exists=row is not None)

    def conditional_create(self, resource: dict[str, Any], query: str | dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """FHIR conditional create: 0 matches -> create (True), 1 -> the existing one (False), >1 -> 412."""
        resource = validate(resource)
        params = parse_qs(query.lstrip("?"), keep_blank_values=True) if isinstance(query, str) else query
        if not params:
            raise ResourceInvalid("If-None-Exist needs search parameters")
        with self.transaction():
            # Inside the write transaction: two racing conditional creates cannot both see 0 matches.
            result = self.search_page(resource["resourceType"], params)
            if result.ignored:
                raise PreconditionFailed(
                    "If-None-Exist uses search parameters the sandbox does not support: " + ", ".join(result.ignored),
                    status=400, code="not-supported")
            if result.total > 1:
                raise PreconditionFailed(
                    f"If-None-Exist matched {result.total} {resource['resourceType']} resources", status=412)
            if result.total == 1:
                return result.resources[0], False
            return self.create(resource), True

    def delete(self, resource_type: str, resource_id: str) -> bool:
        """Delete the resource; False when there was nothing to delete (FHIR delete is idempotent)."""
        with self.transaction() as conn:
            row = conn.execute("SELECT version FROM fhir_resource WHERE type = ? AND id = ?",
                               (resource_type, resource_id)).fetchone()
            if not row:
                return False
            stamp, _ = self._next_stamp(conn)
            conn.execute("DELETE FROM fhir_resource WHERE type = ? AND id = ?", (resource_type, resource_id))
            conn.execute("DELETE FROM fhir_search_key WHERE type = ? AND id = ?", (resource_type, resource_id))
            conn.execute("INSERT INTO fhir_history (type, id, version, last_updated, deleted, content)"
                         " VALUES (?, ?, ?, ?, 1, NULL)", (resource_type, resource_id, row[0] + 1, stamp))
            return True

    def load_bundle(self, bundle: dict[str, Any]) -> int:
        """Store every entry of a collection/transaction Bundle under its own id (seed data)."""
        n = 0
        with self.transaction():
            for entry in bundle.get("entry", []):
                self.update(entry["resource"])
                n += 1
        return n

    def load_seed(self, directory: Path = DATA_DIR) -> int:
        """Load ``data/*.json`` Bundles in file-name order, all or nothing."""
        n = 0
        with self.transaction():
            for path in sorted(directory.glob("*.json")):
                n += self.load_bundle(json.loads(path.read_text(encoding="utf-8")))
        return n

    def _last_history_version(self, conn: sqlite3.Connection, resource: dict[str, Any]) -> int:
        row = conn.execute("SELECT MAX(version) FROM fhir_history WHERE type = ? AND id = ?",
                           (resource["resourceType"], resource["id"])).fetchone()
        return row[0] or 0

    def _next_stamp(self, conn: sqlite3.Connection) -> tuple[str, int]:
        conn.execute("UPDATE fhir_seq SET n = n + 1")
        seq = conn.execute("SELECT n FROM fhir_seq").fetchone()[0]
        stamp = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        return stamp, seq

    def _write(self, resource: dict[str, Any], previous_version: int, exists: bool = False) -> dict[str, Any]:
        conn = self._conn()
        stamp, seq = self._next_stamp(conn)
        version = previous_version + 1
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = stamp
        resource["meta"] = meta
        # resourceType, id, meta first: what people expect to see when they read the JSON.
        ordered = {"resourceType": resource["resourceType"], "id": resource["id"], "meta": meta}
        ordered.update((k, v) for k, v in resource.items() if k not in ordered)
        resource = ordered
        content = json.dumps(resource, separators=(",", ":"), ensure_ascii=False)
        rtype, rid = resource["resourceType"], resource["id"]
        if exists:
            conn.execute("UPDATE fhir_resource SET version = ?, last_updated = ?, seq = ?, content = ?"
                         " WHERE type = ? AND id = ?", (version, stamp, seq, content, rtype, rid))
        else:
            try:
                conn.execute("INSERT INTO fhir_resource (type, id, version, last_updated, seq, content)"
                             " VALUES (?, ?, ?, ?, ?, ?)", (rtype, rid, version, stamp, seq, content))
            except sqlite3.IntegrityError:
                raise PreconditionFailed(f"{rtype}/{rid} already exists", status=409) from None
        conn.execute("INSERT INTO fhir_history (type, id, version, last_updated, deleted, content)"
                     " VALUES (?, ?, ?, ?, 0, ?)", (rtype, rid, version, stamp, content))
        _index(conn, rtype, rid, resource)
        return resource


def _index(conn: sqlite3.Connection, rtype: str, rid: str, resource: dict[str, Any]) -> None:
    """(Re)write the index keys of one resource: its identifiers and the patients it references."""
    conn.execute("DELETE FROM fhir_search_key WHERE type = ? AND id = ?", (rtype, rid))
    keys = set()
    for ident in _values(resource, "identifier"):
        if isinstance(ident, dict) and ident.get("value") is not None:
            keys.add(f"identifier:{ident.get('system') or ''}|{ident['value']}")
            keys.add(f"identifier-value:{ident['value']}")
    for path in SEARCH_PARAMS["patient"]["*"][1] + ["subject"]:
        for ref in _values(resource, path):
            reference = ref.get("reference") if isinstance(ref, dict) else None
            if isinstance(reference, str) and reference:
                keys.add(f"patient:{reference.split('/_history/')[0].rstrip('/').split('/')[-1]}")
    if rtype == "Patient":
        keys.add(f"patient:{rid}")
    conn.executemany("INSERT OR IGNORE INTO fhir_search_key (type, key, id) VALUES (?, ?, ?)",
                     [(rtype, k, rid) for k in keys])


# --- search parameters -------------------------------------------------------------------------------------
# param -> {resource type or "*": (kind, [element paths])}. Paths are dotted; a list at any step fans out.
# Kinds: token (Coding/CodeableConcept/Identifier/code), reference, string, date.

_R = "reference"
_T = "token"
_S = "string"
_D = "date"

SEARCH_PARAMS: dict[str, dict[str, tuple[str, list[str]]]] = {
    "identifier": {"*": (_T, ["identifier"])},
    "patient": {"*": (_R, ["subject", "patient", "for", "beneficiary"])},
    "subject": {"*": (_R, ["subject"])},
    "encounter": {"*": (_R, ["encounter", "context.encounter"])},
    "status": {"*": (_T, ["status"])},
    "category": {"*": (_T, ["category"])},
    "code": {"*": (_T, ["code"])},
    "type": {"*": (_T, ["type"])},
    "class": {"Encounter": (_T, ["class"])},
    "intent": {"*": (_T, ["intent"])},
    "gender": {"*": (_T, ["gender"])},
    "birthdate": {"*": (_D, ["birthDate"])},
    "name": {
        "Patient": (_S, ["name.family", "name.given", "name.text", "name.prefix", "name.suffix"]),
        "Practitioner": (_S, ["name.family", "name.given", "name.text", "name.prefix", "name.suffix"]),
        "*": (_S, ["name"]),
    },
    "family": {"*": (_S, ["name.family"])},
    "given": {"*": (_S, ["name.given"])},
    "practitioner": {"*": (_R, ["practitioner", "participant.individual"])},
    "organization": {
        "Location": (_R, ["managingOrganization"]),
        "Patient": (_R, ["managingOrganization"]),
        "*": (_R, ["organization"]),
    },
    "location": {"*": (_R, ["location", "location.location"])},
    # The hospital -> department tree (FHIR R4 Location and Organization "partof").
    "partof": {"Location": (_R, ["partOf"]), "Organization": (_R, ["partOf"])},
    "service-provider": {"Encounter": (_R, ["serviceProvider"])},
    "date": {
        "Observation": (_D, ["effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"]),
        "Encounter": (_D, ["period"]),
        "*": (_D, ["date", "authoredOn", "authored", "occurrenceDateTime", "period"]),
    },
    # DocumentReference "period": time of the service documented (FHIR R4 DocumentReference search parameters).
    "period": {
        "DocumentReference": (_D, ["context.period"]),
    },
    "authored": {"*": (_D, ["authored", "authoredOn"])},
    "authored-on": {"*": (_D, ["authoredOn"])},
    "based-on": {"*": (_R, ["basedOn"])},
    "owner": {"*": (_R, ["owner"])},
    "requester": {"*": (_R, ["requester"])},
    "performer": {"*": (_R, ["performer"])},
    "author": {"*": (_R, ["author"])},
    "focus": {"*": (_R, ["focus"])},
    "questionnaire": {"*": (_S, ["questionnaire"])},
    "url": {"*": (_S, ["url"])},
    "specialty": {"*": (_T, ["specialty"])},
    "role": {"*": (_T, ["code"])},
    "address-postalcode": {"*": (_S, ["address.postalCode"])},
    "_lastUpdated": {"*": (_D, ["meta.lastUpdated"])},
    "_security": {"*": (_T, ["meta.security"])},
    "_tag": {"*": (_T, ["meta.tag"])},
    "_profile": {"*": (_S, ["meta.profile"])},
}
# Reference parameters whose bare-id form implies a target type.
_REF_TARGET = {"patient": "Patient", "encounter": "Encounter", "practitioner": "Practitioner",
               "organization": "Organization", "location": "Location", "service-provider": "Organization",
               "owner": None, "based-on": None, "subject": None}
_MODIFIERS = {_T: {"not", "missing", "text"}, _R: {"missing"}, _S: {"exact", "contains", "missing"},
              _D: {"missing"}}
_DATE_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def _normalise_params(params: dict[str, list[str] | str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for key, value in params.items():
        values = [value] if isinstance(value, str) else [str(v) for v in value]
        out.setdefault(key, []).extend(values)
    return out


def _int_param(values: list[str] | None, default: int | None, name: str) -> int | None:
    if not values:
        return default
    try:
        n = int(values[-1])
    except ValueError:
        raise ResourceInvalid(f"{name} must be a whole number") from None
    if n < 0:
        raise ResourceInvalid(f"{name} must not be negative")
    return n


def _sort(matches: list[tuple[str, int, dict[str, Any]]], sort: list[str] | None) -> str | None:
    """Sort in place; default is insertion order (oldest first). Returns an ignored sort key, if any."""
    keys = [k for value in (sort or []) for k in value.split(",") if k]
    for key in reversed(keys):  # the first key is the primary one
        desc = key.startswith("-")
        name = key.lstrip("-")
        if name == "_lastUpdated":
            matches.sort(key=lambda m: (m[0], m[1]), reverse=desc)
        elif name == "_id":
            matches.sort(key=lambda m: m[2]["id"], reverse=desc)
        else:
            return f"_sort={key}"
    if not keys:
        matches.sort(key=lambda m: m[1])
    return None


def _compile_filters(resource_type: str, params: dict[str, list[str]]) -> tuple[list[Callable], list[str]]:
    filters: list[Callable[[dict[str, Any]], bool]] = []
    ignored: list[str] = []
    for raw_name, values in params.items():
        name, _, modifier = raw_name.partition(":")
        if name == "_id":
            for value in values:
                wanted = set(value.split(","))
                filters.append(lambda r, w=wanted: r.get("id") in w)
            continue
        spec = SEARCH_PARAMS.get(name)
        definition = (spec.get(resource_type) or spec.get("*")) if spec else None
        if definition is None:
            ignored.append(raw_name)
            continue
        kind, paths = definition
        if modifier and modifier not in _MODIFIERS[kind] and not (kind == _R and is_resource_type(modifier)):
            raise ResourceInvalid(f"Search modifier :{modifier} is not supported for {name}", code="not-supported")
        for value in values:  # repeated parameters AND, comma-separated values OR
            filters.append(_make_filter(name, kind, paths, modifier, value))
    return filters, ignored


def _values(resource: Any, path: str) -> list[Any]:
    current = [resource]
    for step in path.split("."):
        nxt = []
        for item in current:
            if isinstance(item, dict) and step in item:
                value = item[step]
                nxt.extend(value if isinstance(value, list) else [value])
        current = nxt
    return current


def _make_filter(name: str, kind: str, paths: list[str], modifier: str, value: str) -> Callable[[dict], bool]:
    if modifier == "missing":
        want_missing = value.lower() == "true"
        return lambda r: (not any(_values(r, p) for p in paths)) == want_missing
    alternatives = _split_or(value)
    if kind == _T:
        matchers = [_token_matcher(v, text=modifier == "text") for v in alternatives]
        if modifier == "not":
            return lambda r: not any(m(x) for p in paths for x in _values(r, p) for m in matchers)
        return lambda r: any(m(x) for p in paths for x in _values(r, p) for m in matchers)
    if kind == _R:
        target = modifier or _REF_TARGET.get(name)
        matchers = [_reference_matcher(v, target) for v in alternatives]
        return lambda r: any(m(x) for p in paths for x in _values(r, p) for m in matchers)
    if kind == _S:
        matchers = [_string_matcher(v, modifier) for v in alternatives]
        return lambda r: any(m(x) for p in paths for x in _values(r, p) for m in matchers)
    matchers = [_date_matcher(v) for v in alternatives]
    return lambda r: any(m(x) for p in paths for x in _values(r, p) for m in matchers)


def _split_or(value: str) -> list[str]:
    """Split on commas not escaped with a backslash."""
    parts = re.split(r"(?<!\\),", value)
    return [p.replace("\\,", ",") for p in parts]


def _codings(element: Any) -> list[tuple[str | None, str | None, str]]:
    """(system, code, text) triples of a code, Coding, CodeableConcept or Identifier."""
    if isinstance(element, str):
        return [(None, element, element)]
    if not isinstance(element, dict):
        return []
    if "coding" in element or ("text" in element and "code" not in element and "value" not in element):
        out = [(c.get("system"), c.get("code"), c.get("display") or "") for c in element.get("coding", [])]
        out.append((None, None, element.get("text") or ""))
        return out
    if "value" in element and "code" not in element:  # Identifier
        type_text = element.get("type", {}).get("text", "") if isinstance(element.get("type"), dict) else ""
        return [(element.get("system"), element.get("value"), type_text)]
    return [(element.get("system"), element.get("code"), element.get("display") or "")]


def _token_matcher(value: str, text: bool = False) -> Callable[[Any], bool]:
    if text:
        needle = value.lower()
        return lambda el: any(needle in (t or "").lower() for _, _, t in _codings(el))
    if "|" in value:
        system, _, code = value.partition("|")
        if system and code:
            return lambda el: any(s == system and c == code for s, c, _ in _codings(el))
        if system:
            return lambda el: any(s == system for s, _, _ in _codings(el))
        return lambda el: any(s is None and c == code for s, c, _ in _codings(el))
    return lambda el: any(c == value for _, c, _ in _codings(el) if c is not None)


def _reference_matcher(value: str, target: str | None) -> Callable[[Any], bool]:
    value = value.split("/_history/")[0]
    parts = value.rstrip("/").split("/")
    if len(parts) >= 2:
        want_type, want_id = parts[-2], parts[-1]
    else:
        want_type, want_id = target, parts[-1]

    def match(element: Any) -> bool:
        if not isinstance(element, dict):
            return False
        ref = element.get("reference")
        if not isinstance(ref, str):
            return False
        bits = ref.split("/_history/")[0].rstrip("/").split("/")
        if len(bits) < 2:
            return False
        return bits[-1] == want_id and (want_type is None or bits[-2] == want_type)

    return match


def _fold(text: str) -> str:
    import unicodedata

    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def _string_matcher(value: str, modifier: str) -> Callable[[Any], bool]:
    if modifier == "exact":
        return lambda el: isinstance(el, str) and el == value
    needle = _fold(value)
    if modifier == "contains":
        return lambda el: isinstance(el, str) and needle in _fold(el)
    return lambda el: isinstance(el, str) and _fold(el).startswith(needle)


# Dates: a value is the range [low, high) its precision implies; a Period is [start, end) with open ends.
_MIN = datetime(1, 1, 1, tzinfo=UTC)
_MAX = datetime(9999, 12, 31, tzinfo=UTC)


def date_range(text: str) -> tuple[datetime, datetime]:
    """[low, high) covered by a FHIR date, dateTime or instant (times without a zone are read as UTC)."""
    text = text.strip()
    m = re.fullmatch(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", text)
    if m:
        year, month, day = int(m[1]), m[2], m[3]
        if day:
            low = datetime(year, int(month), int(day), tzinfo=UTC)
            return low, low + timedelta(days=1)
        if month:
            low = datetime(year, int(month), 1, tzinfo=UTC)
            high = datetime(year + (int(month) == 12), int(month) % 12 + 1, 1, tzinfo=UTC)
            return low, high
        return datetime(year, 1, 1, tzinfo=UTC), datetime(year + 1, 1, 1, tzinfo=UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ResourceInvalid(f"Not a FHIR date/dateTime: {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    step = timedelta(seconds=1) if parsed.microsecond == 0 and "." not in text else timedelta(microseconds=1)
    if re.fullmatch(r"[^T]*T\d{2}:\d{2}([+-].*|Z)?", text):
        step = timedelta(minutes=1)
    return parsed, parsed + step


def _element_range(element: Any) -> tuple[datetime, datetime] | None:
    try:
        if isinstance(element, str):
            return date_range(element)
        if isinstance(element, dict) and ("start" in element or "end" in element):
            low = date_range(element["start"])[0] if element.get("start") else _MIN
            high = date_range(element["end"])[1] if element.get("end") else _MAX
            return low, high
    except ResourceInvalid:
        return None
    return None


def _date_matcher(value: str) -> Callable[[Any], bool]:
    has_prefix = value[:2] in _DATE_PREFIXES
    prefix = value[:2] if has_prefix else "eq"
    low, high = date_range(value[2:] if has_prefix else value)

    def match(element: Any) -> bool:
        rng = _element_range(element)
        if rng is None:
            return False
        rlow, rhigh = rng
        inside = rlow >= low and rhigh <= high
        if prefix == "eq":
            return inside
        if prefix == "ne":
            return not inside
        if prefix == "gt":
            return rhigh > high
        if prefix == "lt":
            return rlow < low
        if prefix == "ge":
            return rhigh > high or inside
        if prefix == "le":
            return rlow < low or inside
        if prefix == "sa":
            return rlow >= high
        if prefix == "eb":
            return rhigh <= low
        return rlow < high and rhigh > low  # ap: overlaps

    return match


# --- Flask wiring ------------------------------------------------------------------------------------------

def init_app(app: Flask) -> None:
    """Create the tables; with ``SEED_DATA`` load the synthetic data into an empty store."""
    store = Store(app.config["SANDBOX_DB"])
    app.extensions["sandbox_store"] = store
    if app.config.get("SEED_DATA") and store.count() == 0:
        store.load_seed(Path(app.config.get("SANDBOX_DATA_DIR") or DATA_DIR))


def get_store(app: Flask | None = None) -> Store:
    app = app or current_app
    return app.extensions["sandbox_store"]
