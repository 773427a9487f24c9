"""Per-launch ``iss``: each standalone launch served under a FHIR base of its own, as independent SMART
launchers do (launch.smarthealthit.org puts the launch's settings in the path: ``/v/r4/sim/<...>/fhir``).

Off by default. With ``SANDBOX_PER_LAUNCH_ISS`` true (``--per-launch-iss``; read on every request, so a test
may flip it on a running sandbox), ``POST /ehr/standalone`` mints a launch id and sends the browser to the
app's standalone launch URL with ``iss=<root>/l/<id>/fhir``. Everything the app needs answers under that
prefix: discovery, ``/auth/...`` (authorize, login, token, jwks) and the FHIR API, each naming the prefixed
URLs (issuer, endpoints, ``fhirUser``, ``fullUrl``). Codes, refresh tokens and access tokens are bound to the
iss they were issued under: used under another iss (or the plain one) they are refused, as two EHRs would.
EHR launches (``/ehr/launch``) keep the plain iss ``<root>/fhir``: the same EHR, reached two ways.

Unknown ids, and any prefixed path while the mode is off, answer 404. With the mode off,
``POST /ehr/standalone`` still works and uses the plain iss.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from flask import Blueprint, Flask, Response, current_app, has_request_context, redirect, request

from sandbox_ehr import authstore

bp = Blueprint("issuers", __name__)

_PREFIXED = re.compile(r"^/l/([A-Za-z0-9_-]{8,64})(/.*)$")
ISS_ID = "sandbox.iss_id"  # WSGI environ key: the per-launch id of this request, absent for the plain iss
# What a per-launch iss serves: the SMART and FHIR endpoints (and the login page's style sheet).
_SERVED_UNDER_PREFIX = ("/fhir", "/auth/", "/static/")


class PerLaunchPrefix:
    """WSGI middleware: ``/l/<id>/rest`` is served as ``/rest`` with ``/l/<id>`` moved to SCRIPT_NAME, so
    ``request.url_root`` and ``url_for`` carry the prefix and every route answers under it unchanged."""

    def __init__(self, wsgi_app: Any) -> None:
        self.wsgi_app = wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        match = _PREFIXED.match(environ.get("PATH_INFO") or "")
        if match:
            environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + f"/l/{match[1]}"
            environ["PATH_INFO"] = match[2]
            environ[ISS_ID] = match[1]
        return self.wsgi_app(environ, start_response)


def current_iss_id() -> str | None:
    """The per-launch id this request came in under; None for the plain iss (and outside a request: the CDS
    client and tests issue tokens and read the iss in an app context)."""
    return request.environ.get(ISS_ID) if has_request_context() else None


def prefix() -> str:
    iss_id = current_iss_id()
    return f"/l/{iss_id}" if iss_id else ""


def root_url() -> str:
    """This server's public root without any per-launch prefix (``SANDBOX_BASE_URL`` when set)."""
    configured = current_app.config.get("SANDBOX_BASE_URL")
    if configured:
        return configured.rstrip("/")
    root = request.url_root.rstrip("/")
    return root[: len(root) - len(prefix())]


def enabled() -> bool:
    return bool(current_app.config.get("SANDBOX_PER_LAUNCH_ISS"))


def iss_for(iss_id: str | None) -> str:
    return root_url() + (f"/l/{iss_id}" if iss_id else "") + "/fhir"


def _check_prefix() -> Response | None:
    iss_id = current_iss_id()
    if iss_id is None:
        return None
    if enabled() and request.path.startswith(_SERVED_UNDER_PREFIX) and authstore.issuer_exists(iss_id):
        return None
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "not-found",
                                                              "diagnostics": "No such FHIR base on this server"}]}
    return Response(json.dumps(outcome), status=404, content_type="application/fhir+json")


def app_standalone_url() -> str:
    """The app's standalone launch URL: ``APP_STANDALONE_URL``, else ``<APP_LAUNCH_URL>/standalone``."""
    configured = current_app.config.get("APP_STANDALONE_URL")
    if configured:
        return configured
    parts = urlsplit(current_app.config["APP_LAUNCH_URL"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/standalone", "", ""))


@bp.post("/ehr/standalone")
def standalone() -> Response:
    """Start a standalone launch of the app: a fresh iss of its own when the mode is on, else the plain one."""
    iss = iss_for(authstore.create_issuer() if enabled() else None)
    target = app_standalone_url()
    sep = "&" if urlsplit(target).query else "?"
    return redirect(f"{target}{sep}{urlencode({'iss': iss})}", code=303)


def init_app(app: Flask) -> None:
    app.config.setdefault("SANDBOX_PER_LAUNCH_ISS", False)
    app.config.setdefault("APP_STANDALONE_URL", None)
    app.wsgi_app = PerLaunchPrefix(app.wsgi_app)  # type: ignore[method-assign]
    app.before_request(_check_prefix)
