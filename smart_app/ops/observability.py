"""Operations signals without PHI: JSON log lines with a request id, X-Request-ID to the EHR, Prometheus metrics.

Logs. One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``request_id`` and
``launch`` (a hash of the launch id: ``launch_ref`` below — the id itself is never logged), plus
``exc_type`` for errors (the type only: exception text can echo EHR data). Every field is stripped of control
and bidi characters and capped (message 1000 characters, others 128), so EHR-supplied text can neither forge a
line nor flood the log. Call sites log no name, MRN, patient id, answer or ZIP (reviewed; the tests check the
lines of a whole journey); SQL parameters are never logged (the engine has ``hide_parameters=True``), and
urllib3's request lines (which carry FHIR URLs with ids) are held at WARNING.

Request id. Taken from the proxy's ``X-Request-ID`` when it is a plain token (letters, digits, ``._-``, at most
64), else made here; returned on the response and sent to the EHR on every call (fhir/http.py). The outbox
worker makes one per batch.

Metrics (prometheus_client) at ``/metrics``, protected by a bearer token: set ``METRICS_TOKEN`` and give it to
the Prometheus scrape job (``authorization: credentials``); with no token set, /metrics answers 404. Under
gunicorn set ``PROMETHEUS_MULTIPROC_DIR`` to one folder every process of the host writes (both instances and the
outbox worker: deploy/systemd/ and deploy/compose.yaml share one), so every process's counters are summed and a
scrape through nginx sees the same totals, the worker's included, whichever instance answers (prometheus_client
"multiprocess mode"; config/gunicorn.conf.py marks dead workers; the folder starts empty at boot and holds
counters and histograms only, no live gauges). Outbox figures and the open referrals per route
(smart_app/worklist/alerts.py) are read from the database at scrape time by collectors added with
``add_scrape_collector``, so they are exact across processes and never summed over workers.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import time
import unicodedata
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, abort, current_app, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from config.current import current_settings, settings_of
from smart_app.store.models import OutboxItem

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("ipv_request_id", default=None)
_launch: contextvars.ContextVar[str | None] = contextvars.ContextVar("ipv_launch_ref", default=None)
REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MESSAGE_CAP, FIELD_CAP = 1000, 128

# -- request id ---------------------------------------------------------------------------------------------


def new_request_id() -> str:
    return secrets.token_hex(16)


def current_request_id() -> str | None:
    return _request_id.get()


def set_request_id(value: str | None) -> contextvars.Token:
    return _request_id.set(value)


def request_id_header() -> dict[str, str]:
    """Header provider for the outbound EHR session (fhir/http.py)."""
    rid = _request_id.get()
    return {"X-Request-ID": rid} if rid else {}


# -- log lines ----------------------------------------------------------------------------------------------
def clean(value: Any, cap: int = FIELD_CAP) -> str:
    """Printable text only (no control, line or bidi characters), at most ``cap`` characters."""
    text = str(value)
    out = "".join(ch if ch.isprintable() and unicodedata.category(ch) not in ("Cf", "Zl", "Zp") else " "
                  for ch in text[: cap * 2])
    return out[:cap] + ("…" if len(text) > cap else "")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the line
            message = str(record.msg)
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": clean(record.name),
            "message": clean(message, MESSAGE_CAP),
            "request_id": clean(getattr(record, "request_id", None) or _request_id.get() or "-"),
            "launch": clean(getattr(record, "launch", None) or _launch.get() or "-"),
        }
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = clean(record.exc_info[0].__name__)
        return json.dumps(line, ensure_ascii=False)


class TextFormatter(JsonFormatter):
    """The same cleaned fields on one human-readable line (tuning.log_format: text, for a terminal)."""

    def format(self, record: logging.LogRecord) -> str:
        d = json.loads(super().format(record))
        extra = f" exc={d['exc_type']}" if "exc_type" in d else ""
        return f"{d['time']} {d['level']} {d['logger']} [{d['request_id']} {d['launch']}] {d['message']}{extra}"


_HANDLER_FLAG = "_ipv_handler"


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """One handler on the root logger (idempotent: tests create many apps)."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, _HANDLER_FLAG, False)), None)
    if handler is None:
        handler = logging.StreamHandler()
        setattr(handler, _HANDLER_FLAG, True)
        root.addHandler(handler)
    handler.setFormatter(TextFormatter() if fmt == "text" else JsonFormatter())
    root.setLevel(level)
    # Request lines of urllib3 carry FHIR URLs (patient ids): never below WARNING.
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # import-time chatter


# -- metrics ------------------------------------------------------------------------------------------------
def _registry_for_exposition() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


REQUESTS = Counter("ipv_http_requests_total", "HTTP requests by route template, method and status",
                   ["route", "method", "status"])
LATENCY = Histogram("ipv_http_request_duration_seconds", "Request latency by route template", ["route", "method"],
                    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
ACCESS = Counter("ipv_access_events_total", "Audited accesses by action (launch = launches)", ["action"])
LAUNCH_FAILURES = Counter("ipv_launch_failures_total", "Launches stopped with an error page", ["status"])
WRITES = Counter("ipv_outbox_writes_total", "Chart-write attempts by outcome (worker)", ["outcome"])
# The worker's rounds: in the shared PROMETHEUS_MULTIPROC_DIR every instance's /metrics shows them, so a scrape
# sees the worker at work even when it had nothing to send. Labelled, like every metric here, so that no file is
# made in that folder at import, before the start-up check has looked at it.
ROUNDS = Counter("ipv_outbox_rounds_total", "Rounds of the outbox worker, by whether they claimed rows",
                 ["claimed"])


class OutboxCollector:
    """Outbox depth, oldest unsent age, rows by status and label status: read from the database per scrape."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self):
        depth = GaugeMetricFamily("ipv_outbox_depth", "Chart writes waiting to be sent (pending or sending)")
        oldest = GaugeMetricFamily("ipv_outbox_oldest_age_seconds", "Age of the oldest unsent chart write")
        by_status = GaugeMetricFamily("ipv_outbox_rows", "Outbox rows by status (writes by outcome)",
                                      labels=["status"])
        labels = GaugeMetricFamily("ipv_outbox_label_rows", "Written rows by label check (flagged = the EHR did "
                                   "not keep the security labels)", labels=["label_status"])
        try:
            with self.app.extensions["db_sessionmaker"]() as db:
                counts = dict(db.execute(select(OutboxItem.status, func.count()).group_by(OutboxItem.status)).all())
                label_counts = dict(db.execute(select(OutboxItem.label_status, func.count())
                                               .where(OutboxItem.label_status.is_not(None))
                                               .group_by(OutboxItem.label_status)).all())
                first = db.scalar(select(func.min(OutboxItem.created_at))
                                  .where(OutboxItem.status.in_(("pending", "sending"))))
        except Exception:  # database down: /readyz says so; metrics stay scrapeable
            return
        depth.add_metric([], counts.get("pending", 0) + counts.get("sending", 0))
        age = 0.0
        if first is not None:
            first = first if first.tzinfo else first.replace(tzinfo=UTC)
            age = max(0.0, (datetime.now(UTC) - first).total_seconds())
        oldest.add_metric([], age)
        for status in ("pending", "sending", "written", "failed"):
            by_status.add_metric([status], counts.get(status, 0))
        for status in ("ok", "flagged", "unverified", "unchecked"):
            labels.add_metric([status], label_counts.get(status, 0))
        yield from (depth, oldest, by_status, labels)


def record_outbox_run(stats: Any) -> None:
    """Count one worker round and its batch's outcomes (RunStats)."""
    ROUNDS.labels("yes" if getattr(stats, "claimed", 0) else "no").inc()
    for outcome in ("written", "retrying", "failed", "deferred", "label_flags"):
        n = getattr(stats, outcome, 0)
        if n:
            WRITES.labels(outcome).inc(n)


# -- Flask wiring -------------------------------------------------------------------------------------------
def _before() -> None:
    incoming = request.headers.get("X-Request-ID", "")
    rid = incoming if REQUEST_ID_OK.match(incoming) else new_request_id()
    g.request_id = rid
    g._ipv_tokens = (_request_id.set(rid), _launch.set(_launch_ref_of_request()))
    g._ipv_start = time.perf_counter()


def launch_ref(launch_id: str | None) -> str | None:
    """A short, non-reversible reference to a launch (the same in logs and audit rows)."""
    if not launch_id:
        return None
    return hashlib.sha256(launch_id.encode()).hexdigest()[:16]


def _launch_ref_of_request() -> str | None:
    lid = (request.view_args or {}).get("lid")
    if not lid:
        return None
    return launch_ref(str(lid))


def _after(response: Response) -> Response:
    rid = g.get("request_id")
    if rid:
        response.headers["X-Request-ID"] = rid
    start = g.get("_ipv_start")
    route = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
    REQUESTS.labels(route, request.method, str(response.status_code)).inc()
    if start is not None:
        LATENCY.labels(route, request.method).observe(time.perf_counter() - start)
    return response


def _teardown(_exc: BaseException | None) -> None:
    tokens = g.pop("_ipv_tokens", None)
    if tokens:
        for var, token in zip((_request_id, _launch), tokens, strict=True):
            try:
                var.reset(token)
            except ValueError:  # reset from another context (streamed response): leave it
                pass


SCRAPE_COLLECTORS = "ipv_scrape_collectors"


def add_scrape_collector(app: Flask, collector: Any) -> None:
    """A collector that reads the database on each scrape of /metrics (in whichever worker answers it): figures
    that concern the whole deployment, outside prometheus_client's per-process files."""
    app.extensions.setdefault(SCRAPE_COLLECTORS, []).append(collector)


def metrics_view() -> Response:
    token = current_settings().metrics_token
    if not token:
        abort(404)
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        resp = Response("unauthorized\n", status=401, mimetype="text/plain")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return resp
    registry = _registry_for_exposition()
    body = generate_latest(registry)
    collectors = current_app.extensions.get(SCRAPE_COLLECTORS) or []
    if collectors:
        scratch = CollectorRegistry()
        for collector in collectors:
            scratch.register(collector)
        body += generate_latest(scratch)
    resp = Response(body, mimetype=CONTENT_TYPE_LATEST)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def init_app(app: Flask) -> None:
    settings = settings_of(app)
    configure_logging(settings.log_level, settings.log_format)
    app.before_request_funcs.setdefault(None, []).insert(0, _before)  # first: even a CSRF refusal gets an id
    app.after_request(_after)
    app.teardown_request(_teardown)
    add_scrape_collector(app, OutboxCollector(app))
    app.add_url_rule("/metrics", "metrics", metrics_view, methods=["GET"])
