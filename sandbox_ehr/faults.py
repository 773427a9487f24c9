"""Fault injection for the sandbox FHIR API (a test harness: how does the app behave when the EHR misbehaves?).

``/__faults``: ``GET`` shows the settings and what was injected so far, ``POST`` (JSON) replaces the settings
(keys not given take their defaults), ``DELETE`` resets. Settings:

- ``error_rate`` (0..1): answer with one of ``statuses`` (default [500, 502, 503, 429]); a 429 carries
  ``Retry-After`` of 0 or 1 seconds.
- ``timeout_rate`` (0..1) + ``timeout_seconds``: sleep, then answer 504, or with ``timeout_action: "drop"``
  close the connection without an answer (live server only; the Flask test client gets the 504).
- ``fail_after_commit_rate`` (0..1): the write is committed, but the reply is a 500 (tests idempotent retries).
- ``drop_security_labels``: strip ``meta.security`` from every stored write (an EHR that loses labels).
- ``down``: every /fhir call answers 503.
- ``latency_seconds``: every /fhir call (after ``apply_to``) waits this long before it is handled (a slow EHR).
- ``seed``: random seed, so a run is reproducible (re-POSTing the same settings restarts the sequence).
- ``apply_to``: ``"all"`` requests or only ``"writes"`` (POST/PUT/DELETE/PATCH except searches and batches
  whose entries are all reads).

The settings above act on the FHIR API. The ones below name the endpoints they act on, from ``ENDPOINTS``:
``discovery`` (``.well-known/smart-configuration``, ``openid-configuration``, ``metadata``), ``jwks``,
``authorize`` (authorize and the standalone sign-in), ``token``, ``fhir_read`` (reads, searches, batches of
reads) and ``fhir_write``.

- ``trickle`` (list of endpoints) + ``trickle_bytes_per_second`` (default 1): the answer is sent that slowly,
  status line and headers with the first byte, ``Content-Length`` set. A client with only a per-read timeout
  is held for as long as the body lasts (a 2 kB Patient: over half an hour at 1 byte a second).
- ``redirect_loop`` (list of endpoints): a same-origin redirect to the very URL asked (302, or 307 for a POST,
  which keeps its body), for ever.
- ``hostile``: ``"wrong_types"`` (elements replaced by values of the wrong JSON type: ``Patient.name = 12345``,
  ``Encounter.location = "str"``, ...; ``hostile_fields`` replaces the built-in ``WRONG_TYPES`` table) or
  ``"deep_extension"`` (an ``extension`` nested ``hostile_depth`` levels deep, default 3,000, on every
  resource in the answer), on the endpoints in ``hostile_on`` (default ``["fhir_read"]``). Answers that are
  not FHIR resources (discovery, token) take the table's entry named after the endpoint.

Refresh tokens are single use whatever the settings: the token endpoint rotates them, and one that comes back
revokes its grant. ``GET`` shows how often that happened (``refresh``: ``used``, ``replayed``).

Hooks run before the FHIR API's authentication, like a proxy or outage in front of a real EHR. Enabled only
when the app config ``SANDBOX_FAULTS`` is true (the default in the sandbox).
"""

from __future__ import annotations

import json
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, redirect, request

from sandbox_ehr.auth import RefreshCounts
from sandbox_ehr.fhir_api import FhirProblem, problem_response

bp = Blueprint("faults", __name__)

DEFAULTS: dict[str, Any] = {
    "error_rate": 0.0,
    "statuses": [500, 502, 503, 429],
    "timeout_rate": 0.0,
    "timeout_seconds": 1.0,
    "timeout_action": "504",
    "fail_after_commit_rate": 0.0,
    "drop_security_labels": False,
    "down": False,
    "latency_seconds": 0.0,
    "seed": None,
    "apply_to": "all",
    "trickle": [],
    "trickle_bytes_per_second": 1.0,
    "redirect_loop": [],
    "hostile": None,
    "hostile_on": ["fhir_read"],
    "hostile_fields": None,
    "hostile_depth": 3000,
}
MAX_TIMEOUT = 120.0
ENDPOINTS = ("discovery", "jwks", "authorize", "token", "fhir_read", "fhir_write")
_ENDPOINT_OF_VIEW = {
    "auth.smart_configuration": "discovery", "auth.openid_configuration": "discovery",
    "fhir_api.metadata": "discovery", "auth.jwks": "jwks", "auth.authorize": "authorize",
    "auth.login": "authorize", "auth.token": "token",
}
HOSTILE_MODES = ("wrong_types", "deep_extension")
MAX_DEPTH = 100_000
MAX_RATE = 1_000_000.0
# Values of the wrong JSON type for elements an app reads, per resource type ("*": any other resource; an
# endpoint name: that endpoint's non-FHIR JSON answer).
WRONG_TYPES: dict[str, dict[str, Any]] = {
    "Patient": {"name": 12345, "communication": "en", "address": [7], "birthDate": 19880314,
                "identifier": {"value": "SBX-1001"}},
    "Encounter": {"location": "str", "serviceProvider": ["Organization/org-bwh"], "period": "2026-11-20",
                  "status": False, "subject": "Patient/pat-alice"},
    "Location": {"identifier": "urn:ipv-sandbox:site|bwh", "name": 7, "partOf": [], "address": "75 Francis St"},
    "Organization": {"identifier": {"value": "bwh"}, "name": ["Brigham"], "partOf": "Organization/org-bwh"},
    "Practitioner": {"name": "Dr. Avery", "identifier": 3},
    "PractitionerRole": {"code": {"text": "Social worker"}, "location": "Location/loc-bwh", "organization": 1,
                         "practitioner": True},
    "DocumentReference": {"identifier": "x", "content": {"attachment": 1}, "meta": []},
    "*": {"meta": 12345},
    "discovery": {"token_endpoint": 42, "capabilities": "launch-ehr"},
    "token": {"expires_in": "an hour", "patient": 12345, "scope": ["patient/*.rs"]},
}
_WRITE_METHODS = ("POST", "PUT", "DELETE", "PATCH")


class FaultState:
    """Current settings, a seeded random source and counters; shared by the server's threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.configure({})

    def configure(self, settings: dict[str, Any]) -> None:
        config = validate(settings)
        with self.lock:
            self.config = config
            self.rng = random.Random(config["seed"])
            self.injected = {"errors": 0, "timeouts": 0, "failed_after_commit": 0, "down": 0, "delayed": 0,
                             "trickled": 0, "redirects": 0, "hostile": 0}

    def roll(self) -> float:
        with self.lock:
            return self.rng.random()

    def choice(self, items: list[Any]) -> Any:
        with self.lock:
            return self.rng.choice(items)

    def count(self, what: str) -> None:
        with self.lock:
            self.injected[what] += 1

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"enabled": True, "config": dict(self.config), "injected": dict(self.injected)}

    def active(self, setting: str, endpoint: str | None) -> bool:
        """Whether the endpoint-list ``setting`` (trickle, redirect_loop, hostile_on) names ``endpoint``."""
        return endpoint is not None and endpoint in self.config[setting]


def validate(settings: Any) -> dict[str, Any]:
    """Defaults plus ``settings``; ValueError with a readable message on a bad key or value."""
    if not isinstance(settings, dict):
        raise ValueError("Body must be a JSON object")
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"Unknown settings: {', '.join(sorted(unknown))}")
    config = {**DEFAULTS, **settings}
    for key in ("error_rate", "timeout_rate", "fail_after_commit_rate"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ValueError(f"{key} must be a number from 0 to 1")
    statuses = config["statuses"]
    if not isinstance(statuses, list) or not statuses or \
            not all(isinstance(s, int) and not isinstance(s, bool) and 400 <= s <= 599 for s in statuses):
        raise ValueError("statuses must be a non-empty list of HTTP error codes (400-599)")
    latency = config["latency_seconds"]
    if isinstance(latency, bool) or not isinstance(latency, int | float) or not 0 <= latency <= MAX_TIMEOUT:
        raise ValueError(f"latency_seconds must be a number from 0 to {MAX_TIMEOUT:g}")
    seconds = config["timeout_seconds"]
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds <= MAX_TIMEOUT:
        raise ValueError(f"timeout_seconds must be a number from 0 to {MAX_TIMEOUT:g}")
    if config["timeout_action"] not in ("504", "drop"):
        raise ValueError('timeout_action must be "504" or "drop"')
    for key in ("drop_security_labels", "down"):
        if not isinstance(config[key], bool):
            raise ValueError(f"{key} must be true or false")
    if config["seed"] is not None and (isinstance(config["seed"], bool) or not isinstance(config["seed"], int)):
        raise ValueError("seed must be a whole number or null")
    if config["apply_to"] not in ("all", "writes"):
        raise ValueError('apply_to must be "all" or "writes"')
    for key in ("trickle", "redirect_loop", "hostile_on"):
        if not isinstance(config[key], list) or not all(isinstance(e, str) and e in ENDPOINTS for e in config[key]):
            raise ValueError(f"{key} must be a list of endpoints from: {', '.join(ENDPOINTS)}")
        config[key] = list(config[key])
    rate = config["trickle_bytes_per_second"]
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate <= MAX_RATE:
        raise ValueError(f"trickle_bytes_per_second must be a number above 0, at most {MAX_RATE:g}")
    if config["hostile"] is not None and config["hostile"] not in HOSTILE_MODES:
        raise ValueError(f"hostile must be null or one of: {', '.join(HOSTILE_MODES)}")
    fields = config["hostile_fields"]
    if fields is not None and not (isinstance(fields, dict) and all(
            isinstance(k, str) and isinstance(v, dict) and all(isinstance(f, str) for f in v)
            for k, v in fields.items())):
        raise ValueError("hostile_fields must be null or {resource type or endpoint: {element: value}}")
    depth = config["hostile_depth"]
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
        raise ValueError(f"hostile_depth must be a whole number from 1 to {MAX_DEPTH}")
    config["statuses"] = list(statuses)
    return config


def _state() -> FaultState | None:
    return current_app.extensions.get("sandbox_faults")


def _refresh_counts() -> RefreshCounts:
    return current_app.extensions["sandbox_refresh_counts"]


# --- control endpoint ----------------------------------------------------------------------------------------

@bp.route("/__faults", methods=["GET", "POST", "DELETE"])
def control() -> Response:
    state = _state()
    if state is None:  # SANDBOX_FAULTS is off
        return problem_response(FhirProblem(404, "Fault injection is disabled (SANDBOX_FAULTS)", "not-found"))
    if request.method == "POST":
        try:
            state.configure(request.get_json(force=True, silent=True) if request.data else {})
        except ValueError as exc:
            response = jsonify({"error": str(exc)})
            response.status_code = 400
            return response
    elif request.method == "DELETE":
        state.reset()
        _refresh_counts().reset()
    response = jsonify({**state.snapshot(), "refresh": _refresh_counts().snapshot()})
    response.headers["Cache-Control"] = "no-store"
    return response


# --- hooks on the FHIR API -----------------------------------------------------------------------------------

def _is_write() -> bool:
    """A request that may change data: not a search, not a batch/transaction of reads only."""
    if request.method not in _WRITE_METHODS or request.path.rstrip("/").endswith("/_search"):
        return False
    if request.method == "POST" and request.path.rstrip("/") == "/fhir":
        bundle = request.get_json(force=True, silent=True, cache=True)
        entries = bundle.get("entry") if isinstance(bundle, dict) else None
        if isinstance(entries, list) and entries and all(
                isinstance(e, dict) and str((e.get("request") or {}).get("method", "")).upper() in ("GET", "HEAD")
                for e in entries):
            return False
    return True


def before_fhir_request() -> Response | None:
    state = _state()
    assert state is not None  # the hook is only installed with SANDBOX_FAULTS
    config = state.config
    if config["down"]:
        state.count("down")
        return problem_response(FhirProblem(503, "Injected fault: the FHIR server is down", "transient"))
    write = _is_write()
    if config["apply_to"] == "writes" and not write:
        return None
    if config["latency_seconds"]:
        state.count("delayed")
        time.sleep(config["latency_seconds"])
    if config["timeout_rate"] and state.roll() < config["timeout_rate"]:
        state.count("timeouts")
        time.sleep(config["timeout_seconds"])
        if config["timeout_action"] == "drop":
            _drop_connection()
        return problem_response(FhirProblem(504, "Injected fault: upstream timeout", "timeout"))
    if config["error_rate"] and state.roll() < config["error_rate"]:
        state.count("errors")
        status = state.choice(config["statuses"])
        headers = {"Retry-After": str(state.choice([0, 1]))} if status == 429 else {}
        code = "throttled" if status == 429 else "transient"
        return problem_response(FhirProblem(status, f"Injected fault: HTTP {status}", code, headers))
    if write and config["fail_after_commit_rate"] and state.roll() < config["fail_after_commit_rate"]:
        g.fault_fail_after_commit = True
    return None


def after_fhir_request(response: Response) -> Response:
    if g.get("fault_fail_after_commit") and response.status_code < 300:
        _state().count("failed_after_commit")  # type: ignore[union-attr]
        return problem_response(FhirProblem(500, "Injected fault: the write was committed but the reply failed",
                                            "exception"))
    return response


# --- hooks on every endpoint: trickle, redirect loop, hostile answers -----------------------------------------

def endpoint() -> str | None:
    """Which of ``ENDPOINTS`` this request is (None: a page or endpoint the settings never touch)."""
    if request.blueprint == "fhir_api" and request.endpoint != "fhir_api.metadata":
        return "fhir_write" if _is_write() else "fhir_read"
    return _ENDPOINT_OF_VIEW.get(request.endpoint or "")


def before_any_request() -> Response | None:
    state = _state()
    assert state is not None
    if state.active("redirect_loop", endpoint()):
        state.count("redirects")
        return redirect(request.url, code=302 if request.method in ("GET", "HEAD") else 307)
    return None


def after_any_request(response: Response) -> Response:
    state = _state()
    assert state is not None
    config = state.config
    where = endpoint()
    if config["hostile"] and state.active("hostile_on", where) and response.status_code == 200 \
            and not response.direct_passthrough:
        state.count("hostile")
        _make_hostile(response, where or "", config)
    if state.active("trickle", where) and not response.direct_passthrough:
        state.count("trickled")
        body = response.get_data()
        response.response = _trickle(body, float(config["trickle_bytes_per_second"]))
        response.headers["Content-Length"] = str(len(body))
    return response


def _trickle(body: bytes, rate: float) -> Iterator[bytes]:
    """``body`` at ``rate`` bytes a second: one byte per tick up to 20 bytes a second, then 20 ticks a second."""
    step = max(1, int(rate // 20))
    pause = step / rate
    for start in range(0, len(body), step):
        time.sleep(pause)
        yield body[start:start + step]


def _make_hostile(response: Response, where: str, config: dict[str, Any]) -> None:
    try:
        answer = json.loads(response.get_data())
    except ValueError:
        return
    if not isinstance(answer, dict):
        return
    if config["hostile"] == "wrong_types":
        table = config["hostile_fields"] if config["hostile_fields"] is not None else WRONG_TYPES
        if answer.get("resourceType") == "Bundle":
            answer.update(table.get("Bundle") or {})

        def wrong(resource: dict[str, Any], key: str) -> None:
            is_fhir = isinstance(resource.get("resourceType"), str)
            resource.update(table.get(key) or (table.get("*") if is_fhir else None) or {})

        _each_resource(answer, where, wrong)
        text = json.dumps(answer)
    else:
        # The nesting is written as text: json.dumps (and json.loads) give up long before 3,000 levels.
        marker = f"sandbox-deep-{secrets.token_hex(8)}"
        _each_resource(answer, where, lambda resource, key: resource.__setitem__("extension", marker))
        text = json.dumps(answer).replace(json.dumps(marker), _deep_extension(config["hostile_depth"]))
    response.set_data(text)


def _each_resource(answer: dict[str, Any], where: str, change: Callable[[dict[str, Any], str], None]) -> None:
    """``change(resource, key)`` for each resource of a Bundle, else for the answer itself (key: its
    resourceType, or the endpoint for JSON that is not a FHIR resource)."""
    rtype = answer.get("resourceType")
    key = rtype if isinstance(rtype, str) else where
    if rtype == "Bundle":
        for entry in answer.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                change(resource, resource["resourceType"])
    else:
        change(answer, key)


def _deep_extension(depth: int) -> str:
    """An ``extension`` array whose extension holds an extension ... ``depth`` levels down."""
    link = '{"url":"urn:ipv-sandbox:deep","extension":['
    bottom = '{"url":"urn:ipv-sandbox:deep","valueString":"bottom"}'
    return "[" + link * (depth - 1) + bottom + "]}" * (depth - 1) + "]"


def _drop_connection() -> None:
    """Close the client's socket without an answer (werkzeug's server exposes it); no-op elsewhere."""
    sock = request.environ.get("werkzeug.socket")
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def drop_security_labels(resource: dict[str, Any]) -> dict[str, Any]:
    """Write hook of the FHIR API: an EHR that does not keep meta.security."""
    state = current_app.extensions.get("sandbox_faults")
    if state is None or not state.config["drop_security_labels"] or not isinstance(resource.get("meta"), dict):
        return resource
    meta = {k: v for k, v in resource["meta"].items() if k != "security"}
    out = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        out["meta"] = meta
    return out


def init_app(app: Flask) -> None:
    app.config.setdefault("SANDBOX_FAULTS", True)
    if not app.config["SANDBOX_FAULTS"]:
        return  # /__faults answers 404 and no hook is installed
    app.extensions["sandbox_faults"] = FaultState()
    app.before_request(before_any_request)
    app.after_request(after_any_request)
    # First in line, before the FHIR API authenticates (an outage does not look at tokens).
    app.before_request_funcs.setdefault("fhir_api", []).insert(0, before_fhir_request)
    app.after_request_funcs.setdefault("fhir_api", []).append(after_fhir_request)
    app.extensions.setdefault("sandbox_write_hooks", []).append(drop_security_labels)
