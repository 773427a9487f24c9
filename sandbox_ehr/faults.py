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

Hooks run before the FHIR API's authentication, like a proxy or outage in front of a real EHR. Enabled only
when the app config ``SANDBOX_FAULTS`` is true (the default in the sandbox).
"""

from __future__ import annotations

import random
import socket
import threading
import time
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request

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
}
MAX_TIMEOUT = 120.0
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
            self.injected = {"errors": 0, "timeouts": 0, "failed_after_commit": 0, "down": 0, "delayed": 0}

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
    config["statuses"] = list(statuses)
    return config


def _state() -> FaultState | None:
    return current_app.extensions.get("sandbox_faults")


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
    response = jsonify(state.snapshot())
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
    # First in line, before the FHIR API authenticates (an outage does not look at tokens).
    app.before_request_funcs.setdefault("fhir_api", []).insert(0, before_fhir_request)
    app.after_request_funcs.setdefault("fhir_api", []).append(after_fhir_request)
    app.extensions.setdefault("sandbox_write_hooks", []).append(drop_security_labels)
