"""FHIR R4 REST API of the sandbox EHR under ``/fhir`` (JSON only).

Interactions: ``GET metadata`` (CapabilityStatement with the SMART ``oauth-uris`` extension), read, vread,
instance history, search (GET and ``POST <type>/_search``) returning searchset Bundles, create (with
``If-None-Exist`` conditional create), update (with ``If-Match``), delete, and ``POST /fhir`` batch and
transaction Bundles (a transaction is all or nothing: one SQLite transaction, ``urn:uuid`` fullUrls resolved).

Every request except ``metadata`` needs a Bearer token issued by the sandbox auth server
(``authstore.verify_access_token``). Scopes are enforced per interaction: v1 ``.read/.write/.*`` and v2
``.cruds`` (with optional ``?param=value`` restrictions), ``patient/`` scopes limited to the token's patient
compartment, ``user/`` and ``system/`` scopes to everything. Errors are OperationOutcomes.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from email.utils import format_datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from flask import Blueprint, Flask, Response, current_app, g, request

from sandbox_ehr import authstore
from sandbox_ehr import personality as personalities
from sandbox_ehr.issuers import current_iss_id
from sandbox_ehr.personality import Rejection
from sandbox_ehr.portal import viewer_of
from sandbox_ehr.store import SearchResult, StoreError, _compile_filters, _values, get_store, is_resource_type

bp = Blueprint("fhir_api", __name__)

FHIR_JSON = "application/fhir+json; charset=utf-8"
FHIR_VERSION = "4.0.1"
MAX_BUNDLE_ENTRIES = 500

# --- errors ------------------------------------------------------------------------------------------------


class FhirProblem(Exception):
    """An interaction failed: HTTP ``status`` and an OperationOutcome issue ``code``."""

    def __init__(self, status: int, message: str, code: str = "processing", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}


def operation_outcome(message: str, code: str = "processing", severity: str = "error") -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": severity, "code": code, "diagnostics": message}]}


def _json_response(body: dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    data = json.dumps(body, ensure_ascii=False) if body is not None else ""
    response = Response(data, status=status, content_type=FHIR_JSON)
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def problem_response(exc: FhirProblem) -> Response:
    return _json_response(operation_outcome(exc.message, exc.code), exc.status, exc.headers)


def _from_store(exc: StoreError) -> FhirProblem:
    return FhirProblem(exc.status, exc.message, exc.code)


# --- scopes and the patient compartment ---------------------------------------------------------------------

_SCOPE_RE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)(?:\?(.*))?$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}
_V2 = "cruds"


@dataclass(frozen=True)
class ResourceScope:
    context: str  # patient | user | system
    resource_type: str  # a type or "*"
    permissions: frozenset[str]
    query: tuple[tuple[str, str], ...] = ()  # v2 granular restriction, e.g. (("category", "laboratory"),)


@lru_cache(maxsize=1024)
def parse_scope(scope: str) -> ResourceScope | None:
    """A SMART resource scope in v1 (``patient/Observation.read``) or v2 (``patient/Observation.rs``) form.

    Cached: every FHIR call parses each of its token's scopes, and a token holds tens of them."""
    match = _SCOPE_RE.match(scope)
    if not match:
        return None
    context, rtype, perms, query = match.groups()
    if perms in _V1:
        if query:
            return None  # v1 scopes have no query form
        letters = _V1[perms]
    else:
        # v2: letters from c r u d s, in that order, each at most once.
        if not perms or any(p not in _V2 for p in perms) or list(perms) != sorted(set(perms), key=_V2.index):
            return None
        letters = perms
    pairs = tuple((k, v) for k, values in parse_qs(query or "", keep_blank_values=True).items() for v in values)
    return ResourceScope(context, rtype, frozenset(letters), pairs)


# Resource types outside any patient's compartment: patient-scoped tokens may read and search them.
SHARED_TYPES = frozenset({
    "Practitioner", "PractitionerRole", "Organization", "Location", "HealthcareService", "Endpoint",
    "Questionnaire", "ValueSet", "CodeSystem", "ConceptMap", "StructureDefinition", "Library", "PlanDefinition",
    "ActivityDefinition", "Medication", "Substance", "CapabilityStatement", "SearchParameter", "OperationDefinition",
})
# Elements whose reference to Patient/<id> puts a resource in that patient's compartment (generous union of
# the R4 compartment definition's params, enough for the resources the sandbox and the app use).
COMPARTMENT_PATHS = (
    "subject", "patient", "beneficiary", "for", "individual", "performer", "requester", "author", "asserter",
    "recorder", "sender", "recipient", "source", "participant.actor", "participant.individual", "target",
    "agent.who", "policyHolder", "subscriber", "actor", "informant", "owner", "context",
)


def in_compartment(resource: dict[str, Any], patient_id: str) -> bool:
    if resource.get("resourceType") == "Patient":
        return resource.get("id") == patient_id
    for path in COMPARTMENT_PATHS:
        for ref in _values(resource, path):
            if isinstance(ref, dict) and _ref_parts(ref.get("reference")) == ("Patient", patient_id):
                return True
    return False


def _ref_parts(reference: Any) -> tuple[str, str] | None:
    if not isinstance(reference, str):
        return None
    bits = reference.split("/_history/")[0].rstrip("/").split("/")
    return (bits[-2], bits[-1]) if len(bits) >= 2 else None


@dataclass
class Access:
    """What a token may see of one resource type for one permission."""

    patient: str | None = None  # only this patient's compartment (patient/ scopes)
    queries: list[tuple[tuple[str, str], ...]] = field(default_factory=list)  # OR of granular restrictions
    resource_type: str = ""
    viewer: str | None = None  # patient | proxy: a patient-facing sign-in reading (portal.py)

    def allows(self, resource: dict[str, Any]) -> bool:
        if self.patient is not None and resource.get("resourceType") not in SHARED_TYPES \
                and not in_compartment(resource, self.patient):
            return False
        if self.queries and not any(_matches_query(resource, q) for q in self.queries):
            return False
        return not self.withheld(resource)

    def withheld(self, resource: dict[str, Any]) -> bool:
        """The personality's portal rules keep this resource from a patient or proxy viewer."""
        return self.viewer is not None and not personalities.current().portal.visible(resource, self.viewer)


def _matches_query(resource: dict[str, Any], query: tuple[tuple[str, str], ...]) -> bool:
    params: dict[str, list[str]] = {}
    for key, value in query:
        params.setdefault(key, []).append(value)
    try:
        filters, ignored = _compile_filters(resource["resourceType"], params)
    except StoreError:
        return False
    return not ignored and all(f(resource) for f in filters)


def _token() -> dict[str, Any]:
    token = g.get("fhir_token")
    if token is None:  # the before_request hook guarantees it; an internal call without one is a bug
        raise FhirProblem(401, "Authentication required", "login")
    return token


def require(resource_type: str, permission: str) -> Access:
    """The token's access to ``resource_type`` for ``permission`` (one of c r u d s), or 403."""
    token = _token()
    scopes = [s for s in (parse_scope(x) for x in (token.get("scope") or "").split()) if s]
    grants = [s for s in scopes if s.resource_type in ("*", resource_type) and permission in s.permissions]
    wide = [s for s in grants if s.context in ("user", "system")]
    chosen = wide or grants
    if not chosen:
        raise FhirProblem(403, f"The access token's scopes do not allow '{permission}' on {resource_type}",
                          "forbidden", {"WWW-Authenticate": 'Bearer realm="sandbox-ehr", error="insufficient_scope"'})
    access = Access(resource_type=resource_type)
    if permission in ("r", "s"):
        access.viewer = viewer_of(token.get("fhirUser"))
    if not wide:
        if resource_type in SHARED_TYPES and permission in ("r", "s"):
            pass
        elif resource_type in SHARED_TYPES:
            raise FhirProblem(403, f"patient/ scopes cannot write {resource_type} (outside the patient compartment)",
                              "forbidden")
        elif not token.get("patient"):
            raise FhirProblem(403, "patient/ scopes need a patient in the launch context", "forbidden")
        else:
            access.patient = token["patient"]
    if all(s.query for s in chosen):
        access.queries = [s.query for s in chosen]
    return access


def _check_visible(access: Access, resource: dict[str, Any]) -> None:
    if access.withheld(resource):
        # A portal shows nothing of what it withholds: not found, rather than a refusal that says it exists.
        raise FhirProblem(404, f"{resource.get('resourceType')} not found", "not-found")
    if not access.allows(resource):
        raise FhirProblem(403, "The access token does not allow access to this resource (patient compartment or "
                               "scope restriction)", "forbidden")


# --- request handling ---------------------------------------------------------------------------------------

@bp.before_request
def _log_start() -> None:
    g.call_started = time.monotonic()


def calls(app: Flask) -> list[dict[str, Any]]:
    """Every /fhir request the sandbox answered, oldest first: method, path, status, started, finished
    (time.monotonic()). Tests read it to see what the app asked of the EHR and when."""
    log = app.extensions.get("sandbox_calls")
    with _calls_lock:
        return list(log or [])


_calls_lock = threading.Lock()


@bp.before_request
def _authenticate() -> Response | None:
    if request.endpoint == "fhir_api.metadata" or request.method == "OPTIONS":
        return None
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return problem_response(FhirProblem(401, "A Bearer access token is required", "login",
                                            {"WWW-Authenticate": 'Bearer realm="sandbox-ehr"'}))
    info = authstore.verify_access_token(token.strip())
    # A token is good only under the iss it was issued for (issuers.py: per-launch iss).
    if info is None or info["iss_id"] != current_iss_id():
        return problem_response(FhirProblem(
            401, "The access token is unknown, expired or revoked", "login",
            {"WWW-Authenticate": 'Bearer realm="sandbox-ehr", error="invalid_token"'}))
    g.fhir_token = info
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    log = current_app.extensions.get("sandbox_calls")
    if log is not None:
        with _calls_lock:
            log.append({"method": request.method, "path": request.path, "status": response.status_code,
                        "started": g.get("call_started", time.monotonic()), "finished": time.monotonic()})
    return response


@bp.errorhandler(FhirProblem)
def _problem(exc: FhirProblem) -> Response:
    return problem_response(exc)


@bp.errorhandler(Rejection)
def _rejected(exc: Rejection) -> Response:
    """A vendor personality's refusal; Epic answers an unregistered API with 403 and no body at all."""
    if exc.empty:
        return Response(b"", status=exc.status)
    return problem_response(FhirProblem(exc.status, exc.message, exc.code))


@bp.errorhandler(StoreError)
def _store_problem(exc: StoreError) -> Response:
    return problem_response(_from_store(exc))


def base_url() -> str:
    from sandbox_ehr.auth import issuer

    return issuer()


def _prefer() -> dict[str, str]:
    out = {}
    for part in request.headers.get("Prefer", "").split(";"):
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key:
                out[key.strip().lower()] = value.strip().strip('"')
    return out


def _body() -> Any:
    data = request.get_data(cache=True)
    if not data:
        raise FhirProblem(400, "The request needs a JSON body (a FHIR resource)", "structure")
    try:
        return json.loads(data)
    except ValueError:
        raise FhirProblem(400, "The body is not valid JSON", "structure") from None


@dataclass
class Outcome:
    status: int
    resource: dict[str, Any] | None = None
    location: str | None = None
    write: bool = False
    created: bool = False  # a new resource from a create: the personality shapes the answer

    @property
    def version(self) -> str | None:
        return ((self.resource or {}).get("meta") or {}).get("versionId")

    @property
    def etag(self) -> str | None:
        return f'W/"{self.version}"' if self.version else None

    @property
    def last_modified(self) -> str | None:
        stamp = ((self.resource or {}).get("meta") or {}).get("lastUpdated")
        if not stamp:
            return None
        try:
            return format_datetime(datetime.fromisoformat(stamp.replace("Z", "+00:00")), usegmt=True)
        except ValueError:
            return None


def _http_response(outcome: Outcome) -> Response:
    headers = {}
    shape = personalities.current() if outcome.created else None
    if outcome.location:
        headers["Location"] = _created_location(outcome, shape.create_location) if shape else outcome.location
    with_etag = shape.create_etag if shape else True
    if with_etag and outcome.etag and outcome.resource and outcome.resource.get("resourceType") != "Bundle":
        headers["ETag"] = outcome.etag
    if with_etag and outcome.last_modified and outcome.resource.get("resourceType") != "Bundle":
        headers["Last-Modified"] = outcome.last_modified
    body = outcome.resource
    if outcome.write:
        prefer = _prefer().get("return", "representation")
        if shape and shape.create_body == "empty":
            body = None  # Oracle: 201 with Content-Length 0 whatever the Prefer header says
        elif shape and shape.create_body == "prefer-minimal" and _prefer().get("return") != "representation":
            body = None  # Epic: empty unless return=representation
        elif prefer == "minimal":
            body = None
        elif prefer.lower() == "operationoutcome":
            body = operation_outcome(f"{request.method} succeeded", "informational", "information")
    if body is None and shape:
        response = Response(b"", status=outcome.status)
        for key, value in headers.items():
            response.headers[key] = value
        return response
    return _json_response(body, outcome.status, headers)


def _created_location(outcome: Outcome, style: str) -> str:
    resource = outcome.resource or {}
    if style == "relative":
        return f"{resource['resourceType']}/{resource['id']}"
    if style == "absolute":
        return f"{base_url()}/{resource['resourceType']}/{resource['id']}"
    return outcome.location or ""


@bp.get("/fhir/metadata")
def metadata() -> Response:
    return _json_response(capability_statement())


@bp.post("/fhir")
@bp.post("/fhir/")
def bundle() -> Response:
    body = _body()
    if isinstance(body, dict) and body.get("type") in ("batch", "transaction"):
        personalities.current().check_bundle(body["type"])
    outcome = process_bundle(body)
    return _http_response(outcome)


@bp.route("/fhir/<path:path>", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
def interaction(path: str) -> Response:
    method = "GET" if request.method == "HEAD" else request.method  # Flask drops the body of a HEAD answer
    query = {k: request.args.getlist(k) for k in request.args}
    segments = [s for s in path.split("/") if s]
    body = None
    if method in ("POST", "PUT") and not (len(segments) == 2 and segments[1] == "_search"):
        body = _body()
    if method == "POST" and len(segments) == 2 and segments[1] == "_search":
        for key in request.form:
            query.setdefault(key, []).extend(request.form.getlist(key))
    headers = {"If-None-Exist": request.headers.get("If-None-Exist"), "If-Match": request.headers.get("If-Match")}
    if viewer_of(_token().get("fhirUser")) is None:
        # A portal app's registration is its own (the patient-facing read APIs); the personality's list is the
        # clinician app's.
        personalities.current().check_api(method, segments)
    outcome = perform(method, segments, query, body, headers)
    return _http_response(outcome)


# --- interactions -------------------------------------------------------------------------------------------

def _type(name: str) -> str:
    if not is_resource_type(name):
        raise FhirProblem(404, f"Resource type {name!r} is not supported", "not-supported")
    return name


def perform(method: str, segments: list[str], query: dict[str, list[str]], body: Any,
            headers: dict[str, str | None]) -> Outcome:
    """One REST interaction; used by the HTTP routes and by batch/transaction entries."""
    n = len(segments)
    if n == 1 and method == "GET":
        return search(_type(segments[0]), query)
    if n == 2 and segments[1] == "_search" and method in ("POST", "GET"):
        return search(_type(segments[0]), query)
    if n == 1 and method == "POST":
        return create(_type(segments[0]), body, headers.get("If-None-Exist"))
    if n == 1 and method == "PUT":
        return conditional_update(_type(segments[0]), body, query)
    if n == 2 and method == "GET":
        return read(_type(segments[0]), segments[1])
    if n == 2 and method == "PUT":
        return update(_type(segments[0]), segments[1], body, headers.get("If-Match"))
    if n == 2 and method == "DELETE":
        return delete(_type(segments[0]), segments[1])
    if n == 3 and segments[2] == "_history" and method == "GET":
        return history(_type(segments[0]), segments[1])
    if n == 4 and segments[2] == "_history" and method == "GET":
        return vread(_type(segments[0]), segments[1], segments[3])
    if method == "PATCH":
        raise FhirProblem(405, "PATCH is not supported by the sandbox", "not-supported")
    raise FhirProblem(404, f"No FHIR interaction {method} /{'/'.join(segments)}", "not-supported")


def _location(resource: dict[str, Any]) -> str:
    return f"{base_url()}/{resource['resourceType']}/{resource['id']}/_history/{resource['meta']['versionId']}"


def read(rtype: str, rid: str) -> Outcome:
    access = require(rtype, "r")
    resource = get_store().read(rtype, rid)
    _check_visible(access, resource)
    return Outcome(200, resource)


def vread(rtype: str, rid: str, vid: str) -> Outcome:
    access = require(rtype, "r")
    resource = get_store().vread(rtype, rid, vid)
    _check_visible(access, resource)
    return Outcome(200, resource)


def history(rtype: str, rid: str) -> Outcome:
    access = require(rtype, "r")
    versions = get_store().history(rtype, rid)
    if not versions:
        get_store().read(rtype, rid)  # 404 or 410
    for resource in versions:
        _check_visible(access, resource)
    entries = [{"fullUrl": f"{base_url()}/{rtype}/{rid}", "resource": r,
                "request": {"method": "PUT" if r["meta"]["versionId"] != "1" else "POST",
                            "url": f"{rtype}/{rid}"},
                "response": {"status": "200"}} for r in versions]
    return Outcome(200, {"resourceType": "Bundle", "type": "history", "total": len(entries), "entry": entries})


def _patient_param_target(query: dict[str, list[str]]) -> set[str]:
    """Patient ids named by patient/subject search parameters."""
    out = set()
    for key, values in query.items():
        name = key.split(":")[0]
        if name not in ("patient", "subject"):
            continue
        for value in values:
            for part in value.split(","):
                bits = part.rstrip("/").split("/")
                if len(bits) == 1 and name == "patient":
                    out.add(bits[0])
                elif len(bits) >= 2 and bits[-2] == "Patient":
                    out.add(bits[-1])
    return out


# _include targets the sandbox resolves (FHIR R4 search 3.1.1.5.5): "Type:param" -> where the reference sits.
_INCLUDES: dict[str, tuple[str, ...]] = {
    "Encounter:location": ("location", "location"),
    "Encounter:service-provider": ("serviceProvider",),
    "Encounter:patient": ("subject",), "Encounter:subject": ("subject",),
    "PractitionerRole:practitioner": ("practitioner",),
    "PractitionerRole:organization": ("organization",),
    "PractitionerRole:location": ("location",),
    "Location:partof": ("partOf",), "Location:organization": ("managingOrganization",),
    "Organization:partof": ("partOf",),
}


def _references(resource: dict[str, Any], path: tuple[str, ...]) -> list[str]:
    """Relative references found along ``path`` (lists are walked; absolute URLs on other servers skipped)."""
    nodes: list[Any] = [resource]
    for key in path:
        nxt: list[Any] = []
        for node in nodes:
            value = node.get(key) if isinstance(node, dict) else None
            nxt.extend(value if isinstance(value, list) else [value] if value is not None else [])
        nodes = nxt
    refs = []
    for node in nodes:
        ref = node.get("reference") if isinstance(node, dict) else None
        if isinstance(ref, str) and ref.startswith(base_url() + "/"):
            ref = ref[len(base_url()) + 1:]
        if isinstance(ref, str) and ref.count("/") == 1:
            refs.append(ref)
    return refs


def _included(page: list[dict[str, Any]], wanted: list[str]) -> list[dict[str, Any]]:
    """Resources named by ``_include`` values, each once, only those the token may read."""
    out: list[dict[str, Any]] = []
    seen = {f"{r['resourceType']}/{r['id']}" for r in page}
    for value in wanted:
        path = _INCLUDES.get(value)
        if not path:
            continue
        for resource in page:
            for ref in _references(resource, path):
                if ref in seen:
                    continue
                seen.add(ref)
                rtype, rid = ref.split("/")
                try:
                    access = require(rtype, "r")
                    found = get_store().read(rtype, rid)
                except (FhirProblem, StoreError):
                    continue  # not readable with this token, or not there: silently left out, as servers do
                if access.allows(found):
                    out.append(found)
    return out


def search(rtype: str, query: dict[str, list[str]]) -> Outcome:
    access = require(rtype, "s")
    if access.patient is not None:
        others = _patient_param_target(query) - {access.patient}
        if others:
            raise FhirProblem(403, "A patient-scoped token can only search its own patient's data", "forbidden")
    # The personality's search parameters: the others are ignored (and reported), defaults such as _count applied.
    query, vendor_ignored = personalities.current().search_params(rtype, query)
    params = {k: list(v) for k, v in query.items()}
    include = params.pop("_include", [])
    if include and not personalities.current().search_include:
        vendor_ignored, include = [*vendor_ignored, "_include"], []
    count = _paging_int(params.pop("_count", None), "_count")
    offset = _paging_int(params.pop("_offset", None), "_offset") or 0
    try:
        result: SearchResult = get_store().search_page(rtype, params)
    except StoreError as exc:
        raise _from_store(exc) from None
    if vendor_ignored:
        result.ignored = [*vendor_ignored, *result.ignored]
    if result.ignored and _prefer().get("handling") == "strict":
        raise FhirProblem(400, "Unsupported search parameters: " + ", ".join(result.ignored), "not-supported")
    matches = [r for r in result.resources if access.allows(r)]
    total = len(matches)
    page = matches[offset:]
    if count is not None:
        page = page[:count]
    used = [(k, v) for k, values in params.items() if k not in result.ignored for v in values]
    links = [{"relation": "self", "url": _search_url(rtype, used, count, offset)}]
    if count is not None and offset + count < total:
        links.append({"relation": "next", "url": _search_url(rtype, used, count, offset + count)})
    if count and offset > 0:
        links.append({"relation": "previous", "url": _search_url(rtype, used, count, max(0, offset - count))})
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"{base_url()}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
        for r in page]
    entries += [{"fullUrl": f"{base_url()}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "include"}}
                for r in _included(page, include)]
    if result.ignored:
        entries.append({"resource": operation_outcome(
            "Ignored unsupported search parameters: " + ", ".join(result.ignored), "not-supported", "warning"),
            "search": {"mode": "outcome"}})
    return Outcome(200, {"resourceType": "Bundle", "id": uuid.uuid4().hex, "type": "searchset", "total": total,
                         "link": links, "entry": entries})


def _paging_int(values: list[str] | None, name: str) -> int | None:
    if not values:
        return None
    try:
        n = int(values[-1])
    except ValueError:
        raise FhirProblem(400, f"{name} must be a whole number", "invalid") from None
    if n < 0:
        raise FhirProblem(400, f"{name} must not be negative", "invalid")
    return n


def _search_url(rtype: str, used: list[tuple[str, str]], count: int | None, offset: int) -> str:
    pairs = list(used)
    if count is not None:
        pairs.append(("_count", str(count)))
    if offset:
        pairs.append(("_offset", str(offset)))
    return f"{base_url()}/{rtype}" + (f"?{urlencode(pairs)}" if pairs else "")


def _prepare_write(rtype: str, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise FhirProblem(400, "The body must be a JSON object (a FHIR resource)", "structure")
    if body.get("resourceType") != rtype:
        raise FhirProblem(400, f"resourceType {body.get('resourceType')!r} does not match the URL ({rtype})",
                          "invalid")
    resource = dict(body)
    # Hooks (fault injection) that alter what gets stored, e.g. dropping meta.security.
    for hook in current_app.extensions.get("sandbox_write_hooks", []):
        resource = hook(resource)
    return resource


def _write_context(rtype: str) -> str:
    """The scope context that allows this create: system, user or patient (vendor rules depend on it)."""
    granted = [s for s in (parse_scope(x) for x in (_token().get("scope") or "").split()) if s
               and s.resource_type in ("*", rtype) and "c" in s.permissions]
    for context in ("system", "user", "patient"):
        if any(s.context == context for s in granted):
            return context
    return "patient"


def create(rtype: str, body: Any, if_none_exist: str | None, assign_id: str | None = None) -> Outcome:
    personality = personalities.current()
    access = require(rtype, "c")
    resource = _prepare_write(rtype, body)
    resource.pop("id", None)
    _check_visible(access, resource)
    # What this vendor accepts, rejects and silently drops; the store validates what it files.
    resource = personality.create(rtype, resource, _token(), _write_context(rtype))
    if not personality.conditional_create:
        if_none_exist = None  # the header is ignored: a replay creates a second resource
    store = get_store()
    if if_none_exist:
        require(rtype, "s")
        stored, created = store.conditional_create(resource, if_none_exist)
        if not created:
            _check_visible(access, stored)
            return Outcome(200, stored, _location(stored), write=True)
    else:
        stored = store.create(resource, assign_id=assign_id)
    return Outcome(201, stored, _location(stored), write=True, created=True)


def _version_from_etag(value: str | None) -> str | None:
    if not value:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    return value.strip('"')


def update(rtype: str, rid: str, body: Any, if_match: str | None) -> Outcome:
    resource = _prepare_write(rtype, body)
    if resource.get("id") != rid:
        raise FhirProblem(400, "The resource id must be present and equal the id in the URL", "invalid")
    store = get_store()
    with store.transaction():
        exists = store.exists(rtype, rid)
        access = require(rtype, "u" if exists else "c")
        if exists:
            _check_visible(access, store.read(rtype, rid))
        _check_visible(access, resource)
        stored = store.update(resource, if_match=_version_from_etag(if_match))
    return Outcome(200 if exists else 201, stored, _location(stored), write=True)


def conditional_update(rtype: str, body: Any, query: dict[str, list[str]]) -> Outcome:
    if not query:
        raise FhirProblem(400, "PUT on a resource type needs search parameters (conditional update)", "invalid")
    store = get_store()
    with store.transaction():
        require(rtype, "s")
        result = store.search_page(rtype, query)
        if result.ignored:
            raise FhirProblem(400, "Unsupported search parameters: " + ", ".join(result.ignored), "not-supported")
        if result.total > 1:
            raise FhirProblem(412, f"The condition matched {result.total} resources", "multiple-matches")
        if result.total == 1:
            rid = result.resources[0]["id"]
            if isinstance(body, dict) and body.get("id") not in (None, rid):
                raise FhirProblem(400, "The resource id does not match the resource the condition found", "invalid")
            return update(rtype, rid, {**(body or {}), "id": rid} if isinstance(body, dict) else body, None)
        if isinstance(body, dict) and body.get("id"):
            return update(rtype, body["id"], body, None)
        return create(rtype, body, None)


def delete(rtype: str, rid: str) -> Outcome:
    store = get_store()
    with store.transaction():
        access = require(rtype, "d")
        if store.exists(rtype, rid):
            _check_visible(access, store.read(rtype, rid))
        store.delete(rtype, rid)
    return Outcome(204, None)


# --- batch and transaction ----------------------------------------------------------------------------------

def _split_url(url: str) -> tuple[list[str], dict[str, list[str]]]:
    base = base_url()
    if url.startswith(base):
        url = url[len(base):]
    parts = urlsplit(url)
    if parts.scheme or parts.netloc:
        raise FhirProblem(400, f"Entry url {url!r} is not on this server", "invalid")
    segments = [s for s in parts.path.split("/") if s]
    return segments, parse_qs(parts.query, keep_blank_values=True)


def _status_text(status: int) -> str:
    from http import HTTPStatus

    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _entry_response(outcome: Outcome, with_resource: bool) -> dict[str, Any]:
    response: dict[str, Any] = {"status": _status_text(outcome.status)}
    if outcome.location:
        response["location"] = outcome.location
    if outcome.etag and outcome.resource and outcome.resource.get("resourceType") != "Bundle":
        response["etag"] = outcome.etag
        if outcome.resource.get("meta", {}).get("lastUpdated"):
            response["lastModified"] = outcome.resource["meta"]["lastUpdated"]
    entry: dict[str, Any] = {"response": response}
    if outcome.resource is not None and (with_resource or not outcome.write):
        entry["resource"] = outcome.resource
    if outcome.resource is not None and outcome.resource.get("resourceType") != "Bundle" and outcome.resource.get("id"):
        entry["fullUrl"] = f"{base_url()}/{outcome.resource['resourceType']}/{outcome.resource['id']}"
    return {k: entry[k] for k in ("fullUrl", "resource", "response") if k in entry}


def _entry_request(entry: Any, index: int) -> tuple[str, list[str], dict[str, list[str]], dict[str, Any]]:
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        raise FhirProblem(400, f"Bundle entry {index} has no request", "invalid")
    req = entry["request"]
    method = str(req.get("method") or "").upper()
    if method not in ("GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"):
        raise FhirProblem(400, f"Bundle entry {index} has no valid request.method", "invalid")
    if not isinstance(req.get("url"), str) or not req["url"]:
        raise FhirProblem(400, f"Bundle entry {index} has no request.url", "invalid")
    segments, query = _split_url(req["url"])
    return method, segments, query, req


def _entry_headers(req: dict[str, Any]) -> dict[str, str | None]:
    return {"If-None-Exist": req.get("ifNoneExist"), "If-Match": req.get("ifMatch")}


def process_bundle(body: Any) -> Outcome:
    if not isinstance(body, dict) or body.get("resourceType") != "Bundle":
        raise FhirProblem(400, "POST to the base needs a batch or transaction Bundle", "invalid")
    kind = body.get("type")
    if kind not in ("batch", "transaction"):
        raise FhirProblem(400, "Bundle.type must be batch or transaction", "invalid")
    entries = body.get("entry") or []
    if not isinstance(entries, list):
        raise FhirProblem(400, "Bundle.entry must be a list", "structure")
    if len(entries) > MAX_BUNDLE_ENTRIES:
        raise FhirProblem(413, f"At most {MAX_BUNDLE_ENTRIES} entries per Bundle", "too-costly")
    with_resource = _prefer().get("return", "representation") != "minimal"
    if kind == "batch":
        out = [_batch_entry(entry, i, with_resource) for i, entry in enumerate(entries)]
    else:
        out = _transaction(entries, with_resource)
    return Outcome(200, {"resourceType": "Bundle", "id": uuid.uuid4().hex, "type": f"{kind}-response",
                         "entry": out})


def _batch_entry(entry: Any, index: int, with_resource: bool) -> dict[str, Any]:
    try:
        method, segments, query, req = _entry_request(entry, index)
        if not segments:
            raise FhirProblem(400, "Bundles cannot be nested in a batch", "not-supported")
        outcome = perform(method, segments, query, entry.get("resource"), _entry_headers(req))
        return _entry_response(outcome, with_resource)
    except (FhirProblem, StoreError) as exc:
        problem = _from_store(exc) if isinstance(exc, StoreError) else exc
        return {"response": {"status": _status_text(problem.status),
                             "outcome": operation_outcome(problem.message, problem.code)}}


# Transaction processing order (FHIR R4 3.1.0.11.2): DELETE, POST, PUT/PATCH, GET/HEAD.
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


def _transaction(entries: list[Any], with_resource: bool) -> list[dict[str, Any]]:
    parsed = [_entry_request(entry, i) for i, entry in enumerate(entries)]
    store = get_store()
    results: list[dict[str, Any] | None] = [None] * len(entries)
    current: int | None = None
    try:
        with store.transaction():
            mapping, existing = _resolve_ids(entries, parsed)
            for i in sorted(range(len(entries)), key=lambda k: _ORDER[parsed[k][0]]):
                current = i
                method, segments, query, req = parsed[i]
                resource = _rewrite_refs(entries[i].get("resource"), mapping)
                try:
                    if method == "POST" and len(segments) == 1:
                        if i in existing:
                            rtype = segments[0]
                            _check_visible(require(rtype, "c"), existing[i])
                            outcome = Outcome(200, existing[i], _location(existing[i]), write=True)
                        else:
                            new_id = mapping_id(mapping, entries[i])
                            outcome = create(_type(segments[0]), resource, None, assign_id=new_id)
                    elif not segments:
                        raise FhirProblem(400, "Bundles cannot be nested in a transaction", "not-supported")
                    else:
                        outcome = perform(method, segments, query, resource, _entry_headers(req))
                except StoreError as exc:
                    raise _from_store(exc) from None
                results[i] = _entry_response(outcome, with_resource)
    except StoreError as exc:
        problem = _from_store(exc)
        raise FhirProblem(problem.status, f"transaction: {problem.message} (nothing was written)",
                          problem.code) from None
    except FhirProblem as exc:
        where = f"transaction entry {current}: " if current is not None else "transaction: "
        raise FhirProblem(exc.status, where + exc.message + " (nothing was written)", exc.code, exc.headers) from None
    return [r for r in results if r is not None]


def mapping_id(mapping: dict[str, str], entry: dict[str, Any]) -> str | None:
    ref = mapping.get(entry.get("fullUrl") or "")
    return ref.split("/", 1)[1] if ref else None


def _resolve_ids(entries: list[Any], parsed: list[tuple]) -> tuple[dict[str, str], dict[int, dict[str, Any]]]:
    """Ids for POST entries before anything is written, so urn:uuid references resolve in any order.

    Conditional creates are resolved here too: one match -> that resource (nothing written), several -> 412.
    """
    mapping: dict[str, str] = {}
    existing: dict[int, dict[str, Any]] = {}
    store = get_store()
    for i, (method, segments, _query, req) in enumerate(parsed):
        full_url = entries[i].get("fullUrl")
        if method == "PUT" and len(segments) == 2 and full_url:
            mapping[full_url] = f"{segments[0]}/{segments[1]}"
        if method != "POST" or len(segments) != 1:
            continue
        rtype = _type(segments[0])
        rid = uuid.uuid4().hex
        if req.get("ifNoneExist"):
            require(rtype, "s")
            params = parse_qs(str(req["ifNoneExist"]).lstrip("?"), keep_blank_values=True)
            if not params:
                raise FhirProblem(400, f"entry {i}: ifNoneExist needs search parameters", "invalid")
            result = store.search_page(rtype, params)
            if result.ignored:
                raise FhirProblem(400, f"entry {i}: ifNoneExist uses unsupported parameters: "
                                  + ", ".join(result.ignored), "not-supported")
            if result.total > 1:
                raise FhirProblem(412, f"entry {i}: ifNoneExist matched {result.total} {rtype} resources",
                                  "multiple-matches")
            if result.total == 1:
                existing[i] = result.resources[0]
                rid = existing[i]["id"]
        if full_url:
            mapping[full_url] = f"{rtype}/{rid}"
        else:
            mapping[f"__entry{i}"] = f"{rtype}/{rid}"
            entries[i] = {**entries[i], "fullUrl": f"__entry{i}"}
    return mapping, existing


def _rewrite_refs(value: Any, mapping: dict[str, str]) -> Any:
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "reference" and isinstance(item, str) and item in mapping:
                out[key] = mapping[item]
            else:
                out[key] = _rewrite_refs(item, mapping)
        return out
    if isinstance(value, list):
        return [_rewrite_refs(v, mapping) for v in value]
    return value


# --- CapabilityStatement ------------------------------------------------------------------------------------

_CAPABILITY_TYPES = (
    "Patient", "Encounter", "Practitioner", "PractitionerRole", "Organization", "Location", "Observation",
    "Condition", "ServiceRequest", "Task", "QuestionnaireResponse", "Questionnaire", "DocumentReference",
    "Consent", "Communication", "Flag", "RelatedPerson", "Provenance", "CarePlan", "Goal", "Procedure",
)
_COMMON_SEARCH = ("_id", "_lastUpdated", "identifier", "patient", "subject", "encounter", "status", "code", "date",
                  "category", "_security", "_tag")


def capability_statement() -> dict[str, Any]:
    from sandbox_ehr.auth import smart_urls

    urls = smart_urls()
    personality = personalities.current()
    interactions = [{"code": c} for c in ("read", "vread", "update", "delete", "history-instance", "create",
                                          "search-type")]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "publisher": "IPV screening sandbox EHR (synthetic data)",
        "kind": "instance",
        "implementation": {"description": f"Sandbox EHR (test harness), personality {personality.name}: "
                                          f"{personality.title}", "url": base_url()},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": False,
                "service": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR"}], "text": "OAuth2 using SMART-on-FHIR profile"}],
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [{"url": "authorize", "valueUri": urls["authorize"]},
                                  {"url": "token", "valueUri": urls["token"]}],
                }],
            },
            "resource": [{
                "type": t, "interaction": interactions, "versioning": "versioned", "readHistory": True,
                "updateCreate": True, "conditionalCreate": personality.conditional_create,
                "conditionalUpdate": personality.conditional_create,
                "searchParam": [{"name": p, "type": _param_type(p)} for p in _COMMON_SEARCH],
                "searchInclude": [v for v in _INCLUDES if v.startswith(t + ":")] if personality.search_include else [],
            } for t in _CAPABILITY_TYPES],
            "interaction": [{"code": kind} for kind, on in (("batch", personality.batch),
                                                             ("transaction", personality.transaction)) if on],
        }],
    }


def _param_type(name: str) -> str:
    if name in ("_lastUpdated", "date"):
        return "date"
    if name in ("patient", "subject", "encounter"):
        return "reference"
    return "token"


# --- wiring -------------------------------------------------------------------------------------------------

def init_app(app: Flask) -> None:
    # Functions resource -> resource applied to every write before it is stored (faults.py registers one).
    app.extensions.setdefault("sandbox_write_hooks", [])
    app.extensions.setdefault("sandbox_calls", deque(maxlen=50_000))
