"""Settings from the environment, with documented defaults.

Every setting can be overridden with an environment variable of the same name.
The deployment file (``IPV_DEPLOYMENT``) holds what differs per EHR: client
registration, scopes, allowed issuers, default instrument.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CONFIG_DIR = Path(__file__).resolve().parent
DEPLOYMENTS_DIR = CONFIG_DIR / "deployments"

# Operations settings (smart_app/ops/health.py, audit.py, retention.py, observability.py), passed to Flask as strings.
OPS_DEFAULTS: dict[str, tuple[str, str]] = {
    "INSTANCE_NAME": ("", "Name of this instance in audit rows and logs; empty = the host name."),
    "READYZ_STRICT": ("0", "1: /readyz also fails when the worker heartbeat or the outbox backlog is too old."),
    "READYZ_OUTBOX_MAX_AGE": ("900", "Seconds the oldest unsent chart write may wait before /readyz reports it."),
    "READYZ_HEARTBEAT_MAX_AGE": ("120", "Seconds since the newest outbox-worker heartbeat before /readyz reports it."),
    "LOG_FORMAT": ("json", "json: one JSON object per log line (time, level, logger, request id, launch hash); text."),
    "METRICS_TOKEN": ("", "Bearer token Prometheus must send to read /metrics; empty = /metrics answers 404."),
    "FAILED_WRITE_RETENTION_DAYS": ("180", "Days a failed chart write keeps its content (for documenting by hand) "
                                           "after it failed; then emptied by the worker."),
    "AUDIT_RETENTION_DAYS": ("2190", "Days access-audit rows are kept (6 years: HIPAA 164.316(b)(2)); purged by the "
                                     "worker."),
}

# name -> (default, description); the README's settings table is generated from this.
DEFAULTS: dict[str, tuple[str, str]] = {
    "IPV_DEPLOYMENT": ("", "Deployment file name in config/deployments/ or a path to one. Required: production "
                           "refuses to start without it (the demo and the tests use `sandbox`)."),
    "IPV_MODE": ("production", "production, or demo / test to say explicitly that this is the demo or a test; only "
                               "then do the start-up checks (`flask check-config`) not stop the app."),
    "IPV_DEMO": ("0", "1 = IPV_MODE=demo (for processes the demo or a benchmark starts)."),
    "DATABASE_URL": ("sqlite:///instance/app.db", "SQLAlchemy URL; PostgreSQL in production."),
    "ALLOW_SQLITE": ("0", "1 lets production start on SQLite (one process only); otherwise SQLite stops start-up."),
    "DB_PING_IDLE_SECONDS": ("10", "A pooled database connection unused this long is tested (SELECT 1) before use; "
                                   "0 = tested at every use."),
    "DB_POOL_SIZE": ("10", "Database connections each app process keeps open (up to 5 more while busy, closed after "
                           "use): at least the process's threads, or connections are opened and closed under load."),
    "SECRET_KEY": ("", "Flask session signing key, at least 32 random bytes. Required in production."),
    "TOKEN_ENCRYPTION_KEY": ("", "Fernet key(s) for tokens and PHI at rest, comma-separated: the first encrypts, all "
                                 "decrypt (rotation). Required in production."),
    "APP_BASE_URL": ("http://127.0.0.1:5000", "Public base URL of this app (redirect_uri is built on it)."),
    "ALLOWED_ISS": ("", "Comma-separated FHIR base URLs allowed to launch us; added to the deployment's."),
    "DISCOVERY_TTL_SECONDS": ("3600", "How long a .well-known/smart-configuration stays cached."),
    "LAUNCH_TTL_SECONDS": ("28800", "How long a launch record lives (one clinic session)."),
    "HTTP_TIMEOUT_SECONDS": ("10", "Deadline for the whole of each call to the EHR: connect, answer and redirects."),
    "EHR_REQUEST_BUDGET_SECONDS": ("25", "All calls to EHRs one page makes end by this long after the page was "
                                         "asked for (below gunicorn's 30 s timeout); 0 = no page-wide limit."),
    "EHR_CALLS_PER_EHR": ("0", "Pages of an app process waiting on one EHR at once (a page's parallel reads count "
                               "once); more are answered at once with 'the EHR is not answering'. 0 = half of "
                               "EHR_CALLS_TOTAL."),
    "EHR_CALLS_TOTAL": ("0", "Pages of an app process waiting on any EHR at once. 0 = its threads "
                             "(`GUNICORN_THREADS`) less two, kept for quick exit and health checks."),
    "EMBEDDED_IN_IFRAME": ("0", "1 when the EHR embeds the app: cookie becomes SameSite=None; Secure; Partitioned."),
    "SESSION_COOKIE_SECURE": ("1", "Send the session cookie over HTTPS only (0 for plain-HTTP demo)."),
    "FRAME_ANCESTORS": ("'self'", "CSP frame-ancestors: the EHR origins allowed to embed the app."),
    "TRUSTED_PROXY_HOPS": ("0", "Reverse proxies in front of the app whose X-Forwarded-For/-Proto/-Host/-Port/"
                                "-Prefix are trusted (werkzeug ProxyFix); 0 = none, the headers are ignored."),
    "TRUSTED_HOSTS": ("", "Comma-separated Host names the app answers (others get 400); empty = the host of "
                          "APP_BASE_URL in production, any host in the demo and tests."),
    "NEUTRAL_EXIT_URL": ("https://www.weather.gov/", "Where quick exit sends the window."),
    "LOG_LEVEL": ("INFO", "Python log level. Logs never carry PHI."),
    "SCREENING_DEFAULT_INSTRUMENT": ("", "Instrument id asked by default; empty = deployment's default_instrument."),
    "SCREENING_INSTRUMENTS": ("", "Comma-separated instrument ids offered; empty = deployment's offered_instruments."),
    "SCREENING_INSTRUMENT_DIRS": ("", "Extra folders of site Questionnaire JSON files (separated by ':'), added "
                                      "to fhir/questionnaires/ and the deployment's instrument_dirs."),
    "DIRECTORY_PATHS": ("", "Directory sources the app serves (':'-separated); empty = config/directory/boston.yaml "
                            "plus every file `ipv-directory import` placed in DIRECTORY_IMPORT_DIR."),
    "DIRECTORY_IMPORT_DIR": ("", "Where `ipv-directory import` writes; empty = instance/directory/."),
    "OUTBOX_MAX_ATTEMPTS": ("", "Transient-failure tries per chart write before its one final retry; empty = the "
                                "EHR profile's."),
    "OUTBOX_FINAL_RETRY_DELAY": ("", "Seconds before the one final retry of a write the EHR refused; empty = 60."),
    # Operations: health, audit, retention, logs and metrics.
    **OPS_DEFAULTS,
    "IDLE_TIMEOUT_SECONDS": ("900", "A launch unused this long needs a new launch from the EHR (shared workstations)."),
    "CLOSE_GRACE_SECONDS": ("20", "After the last tab of a launch closes, how long before the launch ends."),
    "OUTBOUND_HOSTS": ("", "Comma-separated extra origins the app may call (an authorization server on another "
                           "host); added to the deployment's outbound_hosts and the allow-listed iss origins."),
    "RATELIMIT_STORAGE_URI": ("memory://", "Flask-Limiter storage: redis://127.0.0.1:6379 in production (shared "
                                           "by all workers), memory:// for the demo."),
    "RATELIMIT_LAUNCH": ("60 per minute", "Limit per client address on /launch and /launch/standalone."),
    "RATELIMIT_CALLBACK": ("60 per minute", "Limit per client address on /callback."),
    "RATELIMIT_ACTIONS": ("120 per minute", "Limit per client address on worklist actions (social-work queue POSTs)."),
    "WORKLIST_TIME_ZONE": ("", "Time zone of the social-work queue's times; empty = the deployment's "
                              "worklist.time_zone, else America/New_York."),
    "WORKLIST_DUE_URGENT": ("", "How long an urgent referral may wait for a first contact, e.g. '1 business hour' "
                               "(the program's hours and holidays); empty = deployment's worklist.due.urgent, "
                               "else 1 business hour."),
    "WORKLIST_DUE_ROUTINE": ("", "The same for a routine referral, e.g. '2 business days'; empty = deployment's "
                                "worklist.due.routine, else 2 business days."),
    "WORKLIST_MEMORY_DAYS": ("", "Days a screen or referral is remembered for the gate's notice on a later "
                                "launch; empty = deployment's, else 30."),
    "WORKLIST_CLOSED_RETENTION_DAYS": ("", "Days closed referrals and their contact logs are kept; empty = "
                                          "deployment's, else 365."),
}


def env(name: str) -> str:
    return os.environ.get(name, DEFAULTS[name][0])


@dataclass
class Deployment:
    """What one EHR needs from us. Loaded from YAML in config/deployments/."""

    name: str
    client_id: str
    client_auth: str = "none"  # none | client_secret_basic | client_secret_post | private_key_jwt
    client_secret: str | None = None
    private_key_file: str | None = None  # PEM; RS384 or ES384
    signing_alg: str = "RS384"
    key_id: str | None = None
    # Signing-key rotation: the NEXT key is published in the JWKS beside the current one (never used to sign)
    # so EHRs that cache our JWKS know it before it becomes current (README, "Key rotation").
    next_private_key_file: str | None = None
    next_key_id: str | None = None
    scopes_ehr: str = "launch openid fhirUser patient/Patient.rs patient/Encounter.rs"
    scopes_standalone: str = "openid fhirUser user/Patient.rs"  # the queue: no launch/patient
    allowed_iss: list[str] = field(default_factory=list)
    standalone_iss: str | None = None
    ehr_profile: str = "generic-smart2"
    default_instrument: str = "hits"
    offered_instruments: list[str] = field(default_factory=lambda: ["hits", "hark", "pvs", "wast-short", "e-hits"])
    advocate_site: dict[str, Any] = field(default_factory=dict)
    site_map: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, name_or_path: str) -> Deployment:
        path = Path(name_or_path)
        if not path.suffix:
            path = DEPLOYMENTS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise FileNotFoundError(f"deployment file not found: {path}")
        raw = yaml.safe_load(path.read_text()) or {}
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        extra = {k: v for k, v in raw.items() if k not in known}
        data = {k: v for k, v in raw.items() if k in known}
        data.setdefault("name", path.stem)
        # Secrets may come from the environment instead of the file.
        for key, var in (("client_secret", "CLIENT_SECRET"), ("private_key_file", "PRIVATE_KEY_FILE"),
                         ("next_private_key_file", "NEXT_PRIVATE_KEY_FILE"), ("next_key_id", "NEXT_KEY_ID")):
            if os.environ.get(var):
                data[key] = os.environ[var]
        for key in ("private_key_file", "next_private_key_file"):
            if data.get(key) and not Path(data[key]).is_absolute():
                data[key] = str((path.parent / data[key]).resolve())
        # An EHR profile may be a bundled name or a path; a relative path is read next to this file.
        profile = str(data.get("ehr_profile") or "")
        if ("/" in profile or profile.endswith((".yaml", ".yml"))) and not Path(profile).is_absolute():
            data["ehr_profile"] = str((path.parent / profile).resolve())
        return cls(extra=extra, **data)


# Threads of an app process when gunicorn does not say (config/gunicorn.conf.py exports GUNICORN_THREADS), and
# the threads kept free of EHR calls: quick exit and /healthz always find one.
DEFAULT_THREADS = 8
THREADS_KEPT_FROM_EHR_CALLS = 2


def ehr_call_limits(per_ehr: int, total: int) -> dict[str, int]:
    """The outbound bulkhead's bounds (docs/decisions/0009-ehr-deadline-and-bulkhead.md): ``total`` defaults to
    the process's threads less THREADS_KEPT_FROM_EHR_CALLS, ``per_ehr`` to half of it (two slow EHRs at once
    still leave the rest); each at least 1."""
    threads = int(os.environ.get("GUNICORN_THREADS") or DEFAULT_THREADS)
    total = total if total > 0 else max(1, threads - THREADS_KEPT_FROM_EHR_CALLS)
    per_ehr = per_ehr if per_ehr > 0 else max(1, total // 2)
    return {"EHR_CALLS_TOTAL": total, "EHR_CALLS_PER_EHR": min(per_ehr, total)}


def flask_config() -> dict[str, Any]:
    """Flask config mapping built from the environment.

    Without IPV_DEPLOYMENT the sandbox deployment is loaded so the tests and the demo (which say that they are,
    see config/checks.py) can run; a production start then stops, naming the unset variable.
    """
    deployment_error = None
    try:
        deployment: Deployment | None = Deployment.load(env("IPV_DEPLOYMENT") or "sandbox")
    except (OSError, ValueError, TypeError, yaml.YAMLError) as exc:
        deployment, deployment_error = None, f"{env('IPV_DEPLOYMENT')}: {exc}"
    allowed = [u.strip().rstrip("/") for u in env("ALLOWED_ISS").split(",") if u.strip()]
    embedded = env("EMBEDDED_IN_IFRAME") == "1"
    base_url = env("APP_BASE_URL").rstrip("/")
    dep = deployment or Deployment(name="(not loaded)", client_id="")
    return {
        "IPV_DEPLOYMENT": env("IPV_DEPLOYMENT"),
        "IPV_MODE": "demo" if env("IPV_DEMO") == "1" and env("IPV_MODE") == "production" else env("IPV_MODE"),
        "DEPLOYMENT": deployment,
        "DEPLOYMENT_ERROR": deployment_error,
        "DATABASE_URL": env("DATABASE_URL"),
        "ALLOW_SQLITE": env("ALLOW_SQLITE") == "1",
        "DB_PING_IDLE_SECONDS": float(env("DB_PING_IDLE_SECONDS")),
        "DB_POOL_SIZE": int(env("DB_POOL_SIZE")),
        "TRUSTED_PROXY_HOPS": int(env("TRUSTED_PROXY_HOPS") or 0),
        # Flask 3.1 checks the Host header against TRUSTED_HOSTS; None = unchecked (filled in by create_app).
        "TRUSTED_HOSTS": [h.strip() for h in env("TRUSTED_HOSTS").split(",") if h.strip()] or None,
        "SECRET_KEY": env("SECRET_KEY"),
        "TOKEN_ENCRYPTION_KEY": env("TOKEN_ENCRYPTION_KEY"),
        "APP_BASE_URL": base_url,
        "ALLOWED_ISS": [u.rstrip("/") for u in (deployment.allowed_iss if deployment else [])] + allowed,
        "DISCOVERY_TTL_SECONDS": int(env("DISCOVERY_TTL_SECONDS")),
        "LAUNCH_TTL_SECONDS": int(env("LAUNCH_TTL_SECONDS")),
        "HTTP_TIMEOUT_SECONDS": float(env("HTTP_TIMEOUT_SECONDS")),
        "EHR_REQUEST_BUDGET_SECONDS": float(env("EHR_REQUEST_BUDGET_SECONDS")),
        **ehr_call_limits(int(env("EHR_CALLS_PER_EHR") or 0), int(env("EHR_CALLS_TOTAL") or 0)),
        "EMBEDDED_IN_IFRAME": embedded,
        "SESSION_COOKIE_SECURE": embedded or env("SESSION_COOKIE_SECURE") == "1",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "None" if embedded else "Lax",
        "SESSION_COOKIE_PARTITIONED": embedded,
        "SESSION_COOKIE_NAME": "ipv_session",
        "FRAME_ANCESTORS": env("FRAME_ANCESTORS"),
        "NEUTRAL_EXIT_URL": env("NEUTRAL_EXIT_URL"),
        "LOG_LEVEL": env("LOG_LEVEL"),
        "SCREENING_DEFAULT_INSTRUMENT": env("SCREENING_DEFAULT_INSTRUMENT") or dep.default_instrument,
        "SCREENING_INSTRUMENTS": [k.strip() for k in env("SCREENING_INSTRUMENTS").split(",") if k.strip()]
        or list(dep.offered_instruments),
        "SCREENING_INSTRUMENT_DIRS": [d for d in env("SCREENING_INSTRUMENT_DIRS").split(":") if d]
        + [str(d) for d in dep.extra.get("instrument_dirs") or []],
        "SCREENING_DANGER_CHECK": dep.extra.get("danger_check") or "",
        # Read by referrals.store when empty (its default, and DIRECTORY_IMPORT_DIR, come from there).
        "DIRECTORY_PATHS": env("DIRECTORY_PATHS") or None,
        "IDLE_TIMEOUT_SECONDS": int(env("IDLE_TIMEOUT_SECONDS")),
        "CLOSE_GRACE_SECONDS": int(env("CLOSE_GRACE_SECONDS")),
        "OUTBOUND_HOSTS": [h.strip() for h in env("OUTBOUND_HOSTS").split(",") if h.strip()]
        + [str(h) for h in dep.extra.get("outbound_hosts") or []],
        "RATELIMIT_STORAGE_URI": env("RATELIMIT_STORAGE_URI"),
        "RATELIMIT_LAUNCH": env("RATELIMIT_LAUNCH"),
        "RATELIMIT_CALLBACK": env("RATELIMIT_CALLBACK"),
        "RATELIMIT_ACTIONS": env("RATELIMIT_ACTIONS"),
        **_worklist_settings(dep),
        # Unset keys fall back to the EHR profile's retry settings (smart_app/outbox/).
        **{k: env(k) for k in ("OUTBOX_MAX_ATTEMPTS", "OUTBOX_FINAL_RETRY_DELAY") if env(k)},
        **{k: env(k) for k in OPS_DEFAULTS},
    }


_WORKLIST_DEFAULTS = {"WORKLIST_TIME_ZONE": ("time_zone", "America/New_York", str),
                      "WORKLIST_MEMORY_DAYS": ("memory_days", 30, int),
                      "WORKLIST_CLOSED_RETENTION_DAYS": ("closed_retention_days", 365, int)}


def _worklist_settings(deployment: Deployment) -> dict[str, Any]:
    """Social-work queue settings: environment, else the deployment's ``worklist:`` block, else the default."""
    block = deployment.extra.get("worklist") or {}
    out: dict[str, Any] = {}
    for name, (key, default, kind) in _WORKLIST_DEFAULTS.items():
        out[name] = kind(env(name) or block.get(key, default))
    # Due times (smart_app/worklist/due.py reads and checks them). An older file's urgent_contact_hours is an
    # urgent due time on the clock, as it was then.
    due = block.get("due") or {}
    legacy = block.get("urgent_contact_hours")
    out["WORKLIST_DUE_URGENT"] = str(env("WORKLIST_DUE_URGENT") or due.get("urgent")
                                     or (f"{legacy} hours" if legacy else "1 business hour"))
    out["WORKLIST_DUE_ROUTINE"] = str(env("WORKLIST_DUE_ROUTINE") or due.get("routine") or "2 business days")
    return out
