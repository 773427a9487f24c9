"""Vendor personalities of the sandbox EHR: ``generic``, ``epic``, ``oracle``.

A personality is a data file, ``sandbox_ehr/personalities/<name>.yaml``, that states what a vendor's FHIR server
does with a write and cites where each rule comes from: which interactions exist and which are registered on the
client (an unregistered one answers 403 with an empty body on Epic), what a create must carry (rejected with
which status and OperationOutcome), which elements are kept and which are silently dropped, whether
``If-None-Exist`` is honoured, whether batch and transaction Bundles exist, how the create answer looks (body,
Location, ETag), which search parameters exist, and how granted scopes are spelled. This module only interprets
the file; the FHIR API (``fhir_api.py``) and the authorization server (``auth.py``) call it.

Select one per run: ``python -m sandbox_ehr --personality epic``, the ``SANDBOX_PERSONALITY`` config key of
``create_sandbox_app``, or ``python -m sandbox_ehr.demo --personality epic``.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from flask import Flask, current_app

from sandbox_ehr.portal import PortalRules
from sandbox_ehr.store import ResourceNotFound, _values, get_store

DIRECTORY = Path(__file__).parent / "personalities"
NAMES = ("generic", "epic", "oracle")
DEFAULT = "generic"

_SCOPE = re.compile(r"^(patient|user|system)/(\*|[A-Z][A-Za-z]+)\.([a-z*]+)(\?.*)?$")
_V1 = {"read", "write", "*"}


class PersonalityError(ValueError):
    """An unknown personality or a malformed personality file."""


@dataclass
class Rejection(Exception):
    """A request the personality refuses: HTTP ``status``, OperationOutcome ``code`` and ``message``;
    ``empty`` = answer with no body at all (Epic's unregistered API)."""

    status: int
    message: str
    code: str = "processing"
    empty: bool = False


class Personality:
    """One vendor's rules, loaded from its YAML file."""

    def __init__(self, data: dict[str, Any]):
        self.data = data
        self.name: str = data["name"]
        self.title: str = data.get("title", self.name)
        self.summary: str = " ".join(str(data.get("summary", "")).split())
        self.sources: dict[str, str] = data.get("sources") or {}
        scopes = data.get("scopes") or {}
        self.scope_spelling: str = scopes.get("spelling", "as-requested")
        self.scope_syntaxes: set[str] = set(scopes.get("accept") or ["v1", "v2"])
        self.backend_scope_ignored = scopes.get("backend_scope_parameter") == "ignored"
        self.conditional_create: bool = data.get("conditional_create", "honoured") == "honoured"
        self.batch: bool = bool(data.get("batch", True))
        # _include on searches: honoured, or ignored (reported as an unsupported parameter, as a server that does
        # not list it in its CapabilityStatement's searchInclude does).
        self.search_include: bool = data.get("search_include", "honoured") == "honoured"
        self.transaction: bool = bool(data.get("transaction", True))
        self.bundle_rejection = data.get("bundle_rejection") or {"status": 405, "code": "not-supported"}
        response = data.get("create_response") or {}
        self.create_body: str = response.get("body", "prefer")
        self.create_location: str = response.get("location", "absolute-versioned")
        self.create_etag: bool = bool(response.get("etag", True))
        self.unregistered = data.get("unregistered_api") or {"status": 403, "body": "empty"}
        apis = data.get("registered_apis", "all")
        self.registered_apis: set[str] | None = None if apis == "all" else set(apis or [])
        self.search_rules: dict[str, dict[str, Any]] = data.get("search") or {}
        self.create_rules: dict[str, dict[str, Any]] = data.get("create") or {}
        self.note_types = {(t.get("system"), str(t.get("code"))) for t in data.get("note_types") or []}
        # What a patient or a proxy signed in to the portal may read (portal.py).
        self.portal = PortalRules(data.get("portal"), data.get("restricted_note_type"))
        for rtype, spec in self.create_rules.items():
            for rule in (spec or {}).get("rules") or []:
                if rule.get("check") not in _CHECKS:
                    raise PersonalityError(f"{self.name}: unknown check {rule.get('check')!r} for {rtype}")

    def cite(self, key: str | None) -> str:
        return f" [{self.name}: {self.sources.get(key, key)}]" if key else ""

    # --- scopes ------------------------------------------------------------------------------------------------

    def accepts_scope(self, scope: str) -> bool:
        """Whether the authorization server knows this scope's syntax (Oracle: v1 only)."""
        match = _SCOPE.match(scope)
        if not match:
            return True  # launch, openid, fhirUser, ...
        return ("v1" if match.group(3) in _V1 else "v2") in self.scope_syntaxes

    def spell(self, scopes: list[str]) -> list[str]:
        """Granted scopes as this EHR writes them back (Epic: SMART v1 ``.read`` / ``.write``)."""
        if self.scope_spelling != "v1":
            return scopes
        out: list[str] = []
        for scope in scopes:
            match = _SCOPE.match(scope)
            if not match or match.group(3) in _V1:
                spelled = [scope]
            else:
                context, rtype, letters, _query = match.groups()
                spelled = []
                if set(letters) & set("rs"):
                    spelled.append(f"{context}/{rtype}.read")
                if set(letters) & set("cud"):
                    spelled.append(f"{context}/{rtype}.write")
            out.extend(s for s in spelled if s not in out)
        return out

    # --- registered APIs ---------------------------------------------------------------------------------------

    def registered(self, resource_type: str, interaction: str) -> bool:
        apis = self._apis()
        return apis is None or f"{resource_type}.{interaction}" in apis

    def _apis(self) -> set[str] | None:
        override = current_app.config.get("SANDBOX_REGISTERED_APIS")
        if override is not None:
            return None if override == "all" else set(override)
        return self.registered_apis

    def check_api(self, method: str, segments: list[str]) -> None:
        """Raise Rejection for an interaction that is not registered on the client (Epic: 403, empty body)."""
        interaction = _interaction(method, segments)
        if interaction is None or self._apis() is None:
            return
        if not self.registered(segments[0], interaction):
            raise Rejection(int(self.unregistered.get("status", 403)), "API not registered on this client",
                            "forbidden", empty=self.unregistered.get("body") == "empty")

    def check_bundle(self, kind: str) -> None:
        if (kind == "batch" and self.batch) or (kind == "transaction" and self.transaction):
            return
        if self.bundle_rejection == "unregistered":
            raise Rejection(int(self.unregistered.get("status", 403)), f"No {kind} API", "forbidden",
                            empty=self.unregistered.get("body") == "empty")
        raise Rejection(int(self.bundle_rejection.get("status", 405)),
                        f"{self.title} does not support {kind} Bundles",
                        self.bundle_rejection.get("code", "not-supported"))

    # --- search ------------------------------------------------------------------------------------------------

    def search_params(self, resource_type: str, query: dict[str, list[str]]) -> tuple[dict[str, list[str]], list[str]]:
        """(the parameters this EHR understands, the ones it ignores); 400 when a required one is missing."""
        rule = self.search_rules.get(resource_type)
        if not rule:
            return query, []
        known = set(rule.get("params") or [])
        kept = {k: v for k, v in query.items() if k.split(":")[0] in known or k == "_offset"}
        ignored = [k for k in query if k not in kept]
        needed = rule.get("required_one_of")
        if needed and not any(k.split(":")[0] in needed for k in kept):
            raise Rejection(400, "no supported search parameters provided (one of "
                            + ", ".join(needed) + " is required)", "required")
        count = rule.get("default_count")
        if count is not None:
            asked = kept.get("_count")
            value = int(asked[-1]) if asked and asked[-1].isdigit() else int(count)
            kept["_count"] = [str(min(value, int(rule.get("max_count") or value)))]
        return kept, ignored

    # --- create ------------------------------------------------------------------------------------------------

    def create(self, resource_type: str, resource: dict[str, Any], token: dict[str, Any],
               context: str) -> dict[str, Any]:
        """The resource as this EHR files it, or Rejection. ``context``: patient | user | system (the scope
        context that allows the create)."""
        spec = self.create_rules.get(resource_type)
        if not spec:
            return resource
        source = spec.get("source")
        if spec.get("unsupported"):
            answer = spec["unsupported"]
            raise Rejection(int(answer.get("status", 405)),
                            f"{self.title}: {resource_type} create is not supported{self.cite(source)}",
                            answer.get("code", "not-supported"))
        contexts = spec.get("contexts")
        if contexts and context not in contexts:
            wanted = " or ".join(f"{c}/{resource_type}.write" for c in contexts)
            raise Rejection(403, f"{self.title}: {resource_type} create needs {wanted} ({context} access is not "
                                 f"supported){self.cite(source)}", "forbidden")
        ctx = _Ctx(self, resource_type, token, context)
        for rule in spec.get("rules") or []:
            if rule.get("context") and rule["context"] != context:
                continue
            problem = _CHECKS[rule["check"]](resource, rule, ctx)
            if problem:
                raise Rejection(int(rule.get("status", 400)),
                                f"{resource_type}: {problem}{self.cite(rule.get('source') or source)}",
                                rule.get("code", "invalid"))
        filed = copy.deepcopy(resource)
        for path in spec.get("keep_first") or []:
            if isinstance(filed.get(path), list):
                filed[path] = filed[path][:1]
        if spec.get("keep") is not None:
            filed = prune(filed, ["resourceType", *spec["keep"]])
        for key, value in (spec.get("defaults") or {}).items():
            if key in filed:
                continue
            if value == "token-user":
                if token.get("fhirUser"):
                    filed[key] = [{"reference": token["fhirUser"]}]
            elif value == "server-now":
                filed[key] = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
            else:
                filed[key] = copy.deepcopy(value)
        return filed


def _interaction(method: str, segments: list[str]) -> str | None:
    n = len(segments)
    if not n:
        return None
    if n == 1 and method == "GET" or n == 2 and segments[1] == "_search":
        return "search"
    if n == 1 and method == "POST":
        return "create"
    if method == "GET":
        return "read"
    if method in ("PUT", "PATCH") or n == 1 and method == "PUT":
        return "update"
    if method == "DELETE":
        return "delete"
    return None


def prune(resource: dict[str, Any], keep: list[str]) -> dict[str, Any]:
    """Only the listed element paths (dotted, through lists); everything else is dropped."""
    tree: dict[str, Any] = {}
    for path in keep:
        node = tree
        for step in path.split("."):
            node = node.setdefault(step, {})
    return _prune(resource, tree)


def _prune(value: Any, tree: dict[str, Any]) -> Any:
    if isinstance(value, list):
        out = [_prune(v, tree) for v in value]
        return [v for v in out if v not in ({}, None)]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, sub in tree.items():
        if key not in value:
            continue
        kept = value[key] if not sub else _prune(value[key], sub)
        if kept not in ({}, [], None):
            out[key] = kept
    return out


# --- checks (one function per ``check:`` kind; each returns a problem text or None) ---------------------------

@dataclass
class _Ctx:
    personality: Personality
    resource_type: str
    token: dict[str, Any]
    context: str


def _present(values: list[Any]) -> list[Any]:
    return [v for v in values if v not in (None, "", [], {})]


def _check_required(resource: dict[str, Any], rule: dict[str, Any], _ctx: _Ctx) -> str | None:
    missing = [p for p in rule["paths"] if not _present(_values(resource, p))]
    return f"required element(s) missing: {', '.join(missing)}" if missing else None


def _check_values(resource: dict[str, Any], rule: dict[str, Any], _ctx: _Ctx) -> str | None:
    allowed = [str(v) for v in rule["values"]]
    for value in _values(resource, rule["path"]):
        if str(value) not in allowed:
            return f"{rule['path']} {value!r} is not supported (allowed: {', '.join(allowed)})"
    return None


def _check_media_type(resource: dict[str, Any], rule: dict[str, Any], _ctx: _Ctx) -> str | None:
    for value in _values(resource, rule["path"]):
        if str(value).split(";")[0].strip().lower() not in rule["values"]:
            return f"{rule['path']} {value!r} is not supported (only {', '.join(rule['values'])})"
    return None


def _check_base64(resource: dict[str, Any], rule: dict[str, Any], _ctx: _Ctx) -> str | None:
    for value in _values(resource, rule["path"]):
        try:
            base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            return f"{rule['path']} is not base64"
    return None


def _reference(value: Any) -> tuple[str, str] | None:
    ref = value.get("reference") if isinstance(value, dict) else None
    if not isinstance(ref, str):
        return None
    bits = ref.split("/_history/")[0].rstrip("/").split("/")
    return (bits[-2], bits[-1]) if len(bits) >= 2 else None


def _check_reference_type(resource: dict[str, Any], rule: dict[str, Any], _ctx: _Ctx) -> str | None:
    for value in _values(resource, rule["path"]):
        ref = _reference(value)
        if not ref or ref[0] != rule["type"]:
            return f"{rule['path']} must reference a {rule['type']}"
    return None


def _check_note_type(resource: dict[str, Any], rule: dict[str, Any], ctx: _Ctx) -> str | None:
    codings = [c for c in _values(resource, rule["path"] + ".coding") if isinstance(c, dict)]
    if any((c.get("system"), str(c.get("code"))) in ctx.personality.note_types for c in codings):
        return None
    return f"{rule['path']} is not a note type this organisation files"


def _check_category(resource: dict[str, Any], rule: dict[str, Any], _ctx: _Ctx) -> str | None:
    codes = {str(c.get("code")) for c in _values(resource, rule["path"] + ".coding") if isinstance(c, dict)}
    if codes & set(rule["codes"]):
        return None
    return f"only {', '.join(rule['codes'])} can be created"


def _check_encounter(resource: dict[str, Any], rule: dict[str, Any], _ctx: _Ctx) -> str | None:
    refs = _values(resource, rule["path"])
    if not refs:
        return f"{rule['path']} is required (an existing encounter of the patient)" if rule.get("required") else None
    subject = _reference(resource.get("subject"))
    for value in refs:
        ref = _reference(value)
        if not ref or ref[0] != "Encounter":
            return f"{rule['path']} must reference an Encounter"
        try:
            encounter = get_store().read("Encounter", ref[1])
        except ResourceNotFound:
            return f"{rule['path']} Encounter/{ref[1]} does not exist"
        except Exception:  # noqa: BLE001 - deleted (410) and the like: not an encounter to file against
            return f"{rule['path']} Encounter/{ref[1]} cannot be used"
        if _reference(encounter.get("subject")) != subject:
            return f"{rule['path']} Encounter/{ref[1]} belongs to another patient"
        if rule.get("open") and encounter.get("status") in ("finished", "cancelled", "entered-in-error"):
            return f"{rule['path']} Encounter/{ref[1]} is closed"
    return None


def _check_loinc_or_proprietary(resource: dict[str, Any], rule: dict[str, Any], _ctx: _Ctx) -> str | None:
    systems = [str(c.get("system") or "") for c in _values(resource, rule["path"] + ".coding") if isinstance(c, dict)]
    loinc = any(s == "http://loinc.org" for s in systems)
    proprietary = [s for s in systems if s.startswith(rule["proprietary_prefix"])]
    if loinc and proprietary:
        return f"{rule['path']} must not mix LOINC and proprietary codings"
    if not loinc and not proprietary:
        return f"{rule['path']} needs a LOINC or a proprietary coding"
    if len(proprietary) > 1:
        return f"{rule['path']} allows a single proprietary coding"
    return None


def _check_author_is_user(resource: dict[str, Any], rule: dict[str, Any], ctx: _Ctx) -> str | None:
    authors = _values(resource, rule["path"])
    user = ctx.token.get("fhirUser")
    if len(authors) != 1:
        return f"exactly one {rule['path']} is required for provider access (found {len(authors)})"
    if not user or _reference(authors[0]) != _reference({"reference": user}):
        return f"{rule['path']} must be the authorized provider ({user or 'no user in the token'})"
    return None


def _check_absent(resource: dict[str, Any], rule: dict[str, Any], ctx: _Ctx) -> str | None:
    if _present(_values(resource, rule["path"])):
        return f"{rule['path']} cannot be populated for {ctx.context} access"
    return None


def _check_count(resource: dict[str, Any], rule: dict[str, Any], _ctx: _Ctx) -> str | None:
    n = len(_values(resource, rule["path"]))
    if n < int(rule.get("min", 0)) or ("max" in rule and n > int(rule["max"])):
        bounds = f"{rule.get('min', 0)}..{rule.get('max', '*')}"
        return f"{rule['path']} must have {bounds} entries (found {n})"
    return None


def _check_datetime_with_time(resource: dict[str, Any], rule: dict[str, Any], _ctx: _Ctx) -> str | None:
    for path in rule["paths"]:
        for value in _values(resource, path):
            if "T" not in str(value):
                return f"{path} {value!r} needs a time component"
    return None


_CHECKS = {
    "required": _check_required, "values": _check_values, "media_type": _check_media_type,
    "base64": _check_base64, "reference_type": _check_reference_type, "note_type": _check_note_type,
    "category": _check_category, "encounter_of_patient": _check_encounter,
    "loinc_or_proprietary": _check_loinc_or_proprietary, "author_is_user": _check_author_is_user,
    "absent": _check_absent, "count": _check_count, "datetime_with_time": _check_datetime_with_time,
}


# --- loading ----------------------------------------------------------------------------------------------------

def load(name_or_path: str) -> Personality:
    """A personality by name (``generic``, ``epic``, ``oracle``) or by the path of its YAML file."""
    path = Path(name_or_path)
    if name_or_path in NAMES or (not path.suffix and not path.exists()):
        path = DIRECTORY / f"{name_or_path}.yaml"
    if not path.is_file():
        raise PersonalityError(f"Unknown sandbox EHR personality {name_or_path!r} (choose {', '.join(NAMES)})")
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict) or not data.get("name"):
        raise PersonalityError(f"{path}: not a personality file (needs a name)")
    return Personality(data)


def current() -> Personality:
    return current_app.extensions["sandbox_personality"]


def init_app(app: Flask) -> None:
    app.config.setdefault("SANDBOX_PERSONALITY", DEFAULT)
    # Registered APIs of the client (Epic): None = the personality file's list; "all" or a list overrides it.
    app.config.setdefault("SANDBOX_REGISTERED_APIS", None)
    app.extensions["sandbox_personality"] = load(app.config["SANDBOX_PERSONALITY"])
