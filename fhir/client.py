"""Authenticated FHIR R4 REST client: timeouts, JSON, conditional create, batch/transaction.

``timeout`` is the deadline of each whole call (connect, answer, redirects) when the session is the app's
(fhir/http.py); a plain requests session gives it per socket read only.

One instance per launch (or per outbox job). Errors raise ``FhirError`` with the HTTP
status and the server's OperationOutcome; ``FhirUnavailable`` marks what may be retried
(timeouts, connection errors, 5xx, 429) and says whether the request may have reached the EHR.
Nothing here logs resource content.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests

from fhir import json_depth
from fhir.errors import FhirWireError
from fhir.http import never_sent
from fhir.url_policy import safe_relative, under_base

FHIR_JSON = "application/fhir+json"
RETRYABLE_STATUS = {429, 500, 502, 503, 504}


class FhirError(FhirWireError):
    def __init__(self, status: int, message: str, outcome: dict[str, Any] | None = None,
                 retry_after: float | None = None):
        super().__init__(f"FHIR {status}: {message}")
        self.status = status
        self.message = message
        self.outcome = outcome
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status in RETRYABLE_STATUS


class FhirUnavailable(FhirError):
    """Timeout or connection failure. ``sent``: the request may have reached the EHR (a timeout after sending, a
    connection dropped mid-answer), so a write may or may not have been applied; False when it is known that
    nothing was sent (refused connection, failed TLS handshake, connect timeout, bulkhead full)."""

    def __init__(self, message: str, sent: bool = True):
        super().__init__(0, message)
        self.sent = sent

    @property
    def retryable(self) -> bool:
        return True


@dataclass
class Response:
    status: int
    resource: dict[str, Any] | None
    location: str | None
    etag: str | None


class FhirClient:
    def __init__(self, base_url: str, access_token: str | None, timeout: float = 10.0,
                 session: requests.Session | None = None):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.http = session or requests.Session()
        self.headers = {"Accept": FHIR_JSON}
        if access_token:
            self.headers["Authorization"] = f"Bearer {access_token}"

    # -- low level -----------------------------------------------------------------------
    def request(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                json: dict[str, Any] | None = None, headers: dict[str, str] | None = None) -> Response:
        # Every URL stays under the FHIR base: an absolute URL elsewhere, or a path with dot
        # segments ("Practitioner/../../internal"), never gets our bearer token.
        if path.startswith(("http://", "https://")):
            if not under_base(path, self.base_url):
                raise FhirError(400, "refused: URL outside the FHIR base")
            url = path
        else:
            if path and not safe_relative(path.lstrip("/")):
                raise FhirError(400, "refused: not a FHIR path")
            url = f"{self.base_url}/{path.lstrip('/')}"
        hdrs = dict(self.headers)
        if json is not None:
            hdrs["Content-Type"] = FHIR_JSON
        if headers:
            hdrs.update(headers)
        try:
            resp = self.http.request(method, url, params=params, json=json, headers=hdrs, timeout=self.timeout)
        except requests.RequestException as exc:  # timeouts, connections, cut answers, redirect loops
            raise FhirUnavailable(type(exc).__name__, sent=not never_sent(exc)) from None
        body: dict[str, Any] | None = None
        if resp.content:
            try:
                body = json_depth.loads(resp.content)
            except json_depth.TooDeep:
                if resp.status_code < 400:  # a success whose answer cannot be read: what it did is not known
                    raise FhirError(502, "the EHR's answer nests too deeply to read") from None
            except ValueError:
                body = None
        if resp.status_code >= 400:
            retry_after = _retry_after(resp.headers.get("Retry-After"))
            raise FhirError(resp.status_code, _outcome_text(body) or resp.reason or "error", body, retry_after)
        return Response(resp.status_code, body, resp.headers.get("Location") or resp.headers.get("Content-Location"),
                        resp.headers.get("ETag"))

    # -- REST interactions ---------------------------------------------------------------
    def read(self, resource_type: str, resource_id: str) -> dict[str, Any]:
        return self.request("GET", f"{resource_type}/{resource_id}").resource or {}

    def read_reference(self, reference: str) -> dict[str, Any]:
        """Read ``Type/id`` or an absolute URL on this server."""
        return self.request("GET", reference).resource or {}

    def search(self, resource_type: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Resources (entries with search.mode 'match') of the first page."""
        bundle = self.request("GET", resource_type, params=params).resource or {}
        return [e["resource"] for e in bundle.get("entry", [])
                if "resource" in e and e.get("search", {}).get("mode", "match") == "match"]

    def search_pages(self, resource_type: str, params: dict[str, Any] | None = None,
                     max_pages: int = 20) -> tuple[list[dict[str, Any]], bool]:
        """Matches over the first ``max_pages`` pages, following ``next`` links on this server only.
        Returns (resources, complete): complete is False when more pages were left unread."""
        bundle = self.request("GET", resource_type, params=params).resource or {}
        out: list[dict[str, Any]] = []
        for _ in range(max_pages):
            out.extend(e["resource"] for e in bundle.get("entry", [])
                       if "resource" in e and e.get("search", {}).get("mode", "match") == "match")
            nxt = next((link.get("url") for link in bundle.get("link", []) if link.get("relation") == "next"), None)
            if not nxt:
                return out, True
            if not nxt.startswith(self.base_url + "/") and nxt.startswith("http"):
                return out, False  # a next link off this server is not followed
            bundle = self.request("GET", nxt).resource or {}
        return out, False

    def capabilities(self) -> dict[str, Any]:
        """The server's CapabilityStatement (``GET [base]/metadata``)."""
        return self.request("GET", "metadata").resource or {}

    def create(self, resource: dict[str, Any], if_none_exist: str | None = None) -> Response:
        headers = {"Prefer": "return=representation"}
        if if_none_exist:
            headers["If-None-Exist"] = if_none_exist
        return self.request("POST", resource["resourceType"], json=resource, headers=headers)

    def update(self, resource: dict[str, Any]) -> Response:
        return self.request("PUT", f"{resource['resourceType']}/{resource['id']}", json=resource,
                            headers={"Prefer": "return=representation"})

    def bundle(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """POST a batch or transaction Bundle to the base; returns the response Bundle."""
        return self.request("POST", "", json=bundle, headers={"Prefer": "return=representation"}).resource or {}


def _outcome_text(body: dict[str, Any] | None) -> str:
    if not body or body.get("resourceType") != "OperationOutcome":
        return ""
    parts = []
    for issue in body.get("issue", []):
        parts.append(issue.get("diagnostics") or issue.get("details", {}).get("text") or issue.get("code", ""))
    return "; ".join(p for p in parts if p)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None
