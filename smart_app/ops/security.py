"""Response headers that keep traces out of the browser, CSRF protection, and request guards.

- Headers: no-store, CSP (``form-action`` included), HSTS when served over https,
  Cross-Origin-Opener-Policy and Cross-Origin-Resource-Policy.
- The app's own stylesheets and scripts (``CACHEABLE``) are the exception to no-store: they hold no patient data,
  and without a cache a browser fetched three to five of them again with every page, a third of the app's CPU for a
  clinician's journey. Their URLs name their content (``?v=``), so a release is never served from a stale copy.
- No redirect is built from the ``Host`` header: the router's trailing-slash 308 becomes a relative
  ``Location``; ``TRUSTED_HOSTS`` (Flask) refuses unknown hosts where it is set.
- A NUL character in the path, query or form is refused with a 400 before any view or database sees it
  (PostgreSQL rejects NUL in text).
- Outside libraries never log at DEBUG: urllib3 and requests-oauthlib log request lines (patient ids in
  FHIR URLs) and token bodies there.
"""

from __future__ import annotations

import hashlib
import logging
import re
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from flask import Flask, Response, abort, current_app, has_request_context, redirect, request, url_for
from flask_wtf.csrf import CSRFProtect
from werkzeug.routing import RequestRedirect

from config.current import current_settings

csrf = CSRFProtect()

QUIET_LOGGERS = ("urllib3", "requests", "requests_oauthlib", "oauthlib")
HSTS = "max-age=31536000; includeSubDomains"
YEAR_SECONDS = 365 * 24 * 3600
STYLE_SECONDS = 3600
# Endpoint -> Cache-Control; every other response is no-store. The tablet's files (kiosk.static) stay no-store: its
# exit does not clear the cache (smart_app/kiosk/views.py). The EHR's styling is fixed for a launch at its callback.
CACHEABLE = {
    "static": f"public, max-age={YEAR_SECONDS}, immutable",
    "launch.smart_style": f"private, max-age={STYLE_SECONDS}",
}


def init_app(app: Flask) -> None:
    csrf.init_app(app)
    quiet_libraries()
    app.before_request(_refuse_nul)
    app.before_request(_relative_slash_redirect)
    app.after_request(_no_trace_headers)
    app.url_defaults(_static_version)
    app.jinja_env.globals["fixed_url"] = fixed_url
    app.jinja_env.globals["launch_url"] = launch_url


def _static_version(endpoint: str, values: dict[str, Any]) -> None:
    """``url_for('static', filename=...)`` names the file's content: a changed file is a new URL."""
    if endpoint == "static" and "filename" in values:
        values.setdefault("v", static_digest(current_app.static_folder or "", values["filename"]))


FIXED_URLS = 64  # more than the templates name (a bound, should a caller ever pass changing values)


def fixed_url(endpoint: str, **values: str) -> str:
    """``url_for`` for a URL that is the same on every request under one script root (the app's static files,
    the quick exit): built once per app, endpoint, values and script root, then reused. Never for a URL that
    names a launch or anything else of a request."""
    if not has_request_context():  # url_for's own answer there (it builds from the app's settings)
        return url_for(endpoint, **values)
    cache: dict[tuple[Any, ...], str] = current_app.extensions.setdefault("ipv_fixed_urls", {})
    key = (endpoint, tuple(sorted(values.items())), request.script_root)
    url = cache.get(key)
    if url is None:
        url = url_for(endpoint, **values)
        if len(cache) >= FIXED_URLS:
            cache.clear()
        cache[key] = url
    return url


# Stands for the launch id in a kept launch URL. A launch id is letters, digits, "-" and "_" (launch/state.py
# LAUNCH_ID), which a URL path carries as they are, so the id is put in where the stand-in is.
LID_STANDIN = "__lid__"
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
LAUNCH_URLS = 256  # endpoints under /l/<lid>/ the templates name, with room


def launch_url(endpoint: str, lid: str, *, optional: bool = False) -> str | None:
    """``url_for(endpoint, lid=lid)`` for a page of a launch: built once per app, endpoint and script root with a
    stand-in for the id, then the id put in (the same URL). Only for endpoints whose URL is their rule with the
    launch id (no URL defaults of their own). ``optional``: None when that feature's blueprint is not installed
    (as ``url_if``). An id of another shape, or no request, takes ``url_for``'s own way."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    if optional and endpoint not in app.view_functions:
        return None
    if not has_request_context() or not isinstance(lid, str) or not _PLAIN_ID.fullmatch(lid):
        return url_for(endpoint, lid=lid)
    cache: dict[tuple[str, str], str] = app.extensions.setdefault("ipv_launch_urls", {})
    key = (endpoint, request.script_root)
    url = cache.get(key)
    if url is None:
        url = url_for(endpoint, lid=LID_STANDIN)
        if len(cache) >= LAUNCH_URLS:
            cache.clear()
        cache[key] = url
    return url.replace(LID_STANDIN, lid)


@lru_cache(maxsize=64)
def static_digest(folder: str, filename: str) -> str:
    try:
        return hashlib.sha256((Path(folder) / filename).read_bytes()).hexdigest()[:12]
    except OSError:  # no such file: the route answers 404 whatever the URL says
        return "0"


def quiet_libraries() -> None:
    """At most INFO for HTTP/OAuth libraries whatever tuning.log_level says (their DEBUG lines carry URLs with
    patient ids, tokens and codes)."""
    for name in QUIET_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:  # NOTSET (0) included: never inherit a DEBUG root
            logger.setLevel(logging.WARNING)


def _refuse_nul() -> None:
    if "\x00" in request.path or any("\x00" in k or "\x00" in v for k, v in request.args.items(multi=True)):
        abort(400, description="The request contains a character this app does not accept.")
    if request.method == "POST" and request.mimetype in ("application/x-www-form-urlencoded",
                                                         "multipart/form-data"):
        if any("\x00" in k or "\x00" in v for k, v in request.form.items(multi=True)):
            abort(400, description="The request contains a character this app does not accept.")


def _relative_slash_redirect() -> Response | None:
    # Werkzeug builds the trailing-slash redirect from the Host header; ours carries the path only.
    exc = request.routing_exception
    if isinstance(exc, RequestRedirect):
        parts = urlsplit(exc.new_url)
        return redirect(urlunsplit(("", "", parts.path, parts.query, "")), code=exc.code)
    return None


def _origin(url: str) -> str | None:
    parts = urlsplit(url or "")
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else None


def _no_trace_headers(response: Response) -> Response:
    # Nothing the app shows may come back from cache or with Back.
    cache = CACHEABLE.get(request.endpoint or "") if response.status_code in (200, 304) else None
    if cache:
        response.headers["Cache-Control"] = cache
    else:
        response.headers["Cache-Control"] = "no-store, max-age=0"
        response.headers["Pragma"] = "no-cache"
        response.headers["Expires"] = "0"
    # same-origin, not no-referrer: the browser sends a Referer to this app only, never to another origin
    # (the neutral exit page, a program's website, the EHR), so no outbound request says where it came from.
    # Flask-WTF's CSRF check over HTTPS (WTF_CSRF_SSL_STRICT) requires a same-origin Referer on every POST:
    # under no-referrer every form POST was refused with "The referrer header is missing". The alternative,
    # dropping the strict check for Origin / Sec-Fetch-Site, does not work with no-referrer either: Chromium
    # then sends "Origin: null" on form POSTs. Tested over real TLS in tests/tls/.
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Content-Type-Options"] = "nosniff"
    # form-action: forms post only to us; quick exit's POST ends in a redirect to the neutral page,
    # which browsers check against form-action too.
    settings = current_settings()
    exit_origin = _origin(settings.neutral_exit_url)
    form_action = "'self'" + (f" {exit_origin}" if exit_origin else "")
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"object-src 'none'; base-uri 'none'; form-action {form_action}; "
        f"frame-ancestors {settings.frame_ancestors}",
    )
    response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    response.headers["Cross-Origin-Opener-Policy"] = "same-origin"
    response.headers["Cross-Origin-Resource-Policy"] = "same-origin"
    if request.is_secure:
        response.headers["Strict-Transport-Security"] = HSTS
    return response
