"""Flask application factory (flaskr style): extensions via init_app, one blueprint per feature."""

from __future__ import annotations

import gc

from referrals.memory import imports_outside_the_collector, paused_gc

# Start-up's imports made outside the cyclic collector, then frozen out of its reach
# (docs/decisions/0018-start-up-cost.md): the modules live as long as the process.
with imports_outside_the_collector():
    import json
    import secrets
    from pathlib import Path
    from typing import Any
    from urllib.parse import urlsplit

    from cryptography.fernet import Fernet
    from flask import Flask
    from flask.json.provider import DefaultJSONProvider
    from werkzeug.exceptions import BadRequest, SecurityError
    from werkzeug.middleware.proxy_fix import ProxyFix
    from werkzeug.wsgi import get_host

    from config import current
    from config.files import SettingsError
    from config.settings import FLAT_NAMES, Settings, load_settings
    from fhir import json_depth
    from smart_app import store
    from smart_app.cds import views as cds_views
    from smart_app.followup import views as followup_views
    from smart_app.kiosk import sessions as kiosk_sessions
    from smart_app.kiosk import staff as kiosk_staff
    from smart_app.kiosk import views as kiosk_views
    from smart_app.launch import ehr as launch_ehr
    from smart_app.launch import quick_exit, retention
    from smart_app.launch import views as launch_views
    from smart_app.leakcheck import cli as leakcheck_cli
    from smart_app.ops import (
        audit,
        config_check,
        errors,
        health,
        housekeeping,
        i18n,
        observability,
        phones,
        profiles,
        ratelimit,
        security,
        templating,
        warmup,
    )
    from smart_app.outbox import cli as outbox_cli
    from smart_app.referral import views as referral_views
    from smart_app.report import retention as report_retention
    from smart_app.report import views as report_views
    from smart_app.screening import views as screening_views
    from smart_app.store import crypto
    from smart_app.store import directory as directory_imports
    from smart_app.worklist import backfill as worklist_backfill
    from smart_app.worklist import retention as worklist_retention
    from smart_app.worklist import routing as worklist_routing
    from smart_app.worklist import views as worklist_views
    from smart_app.writeback import checkin as writeback_checkin
    from smart_app.writeback import views as writeback_views

# One blueprint per feature, registered in this order (quick exit first: it must answer whatever else fails).
FEATURE_BLUEPRINTS = (quick_exit.bp, launch_views.bp, screening_views.bp, followup_views.bp, referral_views.bp,
                      writeback_views.bp, writeback_checkin.bp, worklist_views.bp, cds_views.bp, report_views.bp,
                      kiosk_staff.bp, kiosk_views.bp)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    # No cyclic collection while the app is built: start-up makes long-lived objects (modules, classes, models,
    # the directory) that each automatic collection would walk again. One full collection afterwards frees the
    # garbage, and what is left (it lives as long as the process) is frozen out of the collector's reach, so no
    # full collection walks it inside a request (docs/decisions/0002-start-up-work.md). gunicorn's pre_fork hook
    # freezes again before forking; this covers every other way of serving the app. The tests, which build many
    # apps in one process, leave both to the automatic collections (a frozen test app would be kept for good).
    with paused_gc():
        app = _build_app(test_config)
    if not app.testing:
        gc.collect()
        gc.freeze()
    return app


def create_build_app() -> Flask:
    """The app as an image's build makes it, for ``flask --app smart_app:create_build_app compile-templates``: the
    Jinja environment of a production start, without a deployment, secrets, database or network (throw-away
    secrets, an in-memory database, no warm-up; nothing written but the compiled templates)."""
    return create_app({"IPV_MODE": "demo", "WARM_UP": False, "DB_CREATE_ALL": False, "DATABASE_URL": "sqlite://",
                       "SECRET_KEY": secrets.token_urlsafe(32), "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
                       "LOG_LEVEL": "ERROR"})


class BoundedJSONProvider(DefaultJSONProvider):
    """Request bodies (a CDS hook call, the consent preview) parsed with a bound on nesting: a body 100,000 levels
    deep is a ValueError (a plain 400), not a RecursionError (500)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return json_depth.loads(s, **kwargs)


def _build_app(test_config: dict[str, Any] | None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    app.jinja_environment = templating.DictFirstEnvironment  # before anything builds app.jinja_env
    app.json = BoundedJSONProvider(app)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    flask_keys, overrides = _split(test_config or {})
    app.config.update(flask_keys)  # TESTING and Flask's (or its extensions') own keys
    try:
        settings = load_settings(overrides)
    except SettingsError as exc:
        if config_check.invoked_as_check_config():
            # `flask check-config` must list the problems of settings that cannot even be read.
            config_check.init_app(app, unreadable=exc)
            return app
        raise config_check.ConfigError.from_settings_error(exc) from None
    current.init_app(app, settings)
    app.config.update(_flask_config(settings))
    app.config.update(flask_keys)  # the tests' own Flask keys win over what the settings imply
    observability.init_app(app)  # JSON logs, request id, /metrics (before anything logs)

    if config_check.invoked_as_check_config():
        # `flask check-config` must list the problems of a configuration that cannot start.
        config_check.init_app(app)
        return app
    config_check.enforce(app)  # production with a problem: stops here, naming every problem
    _dev_secrets(app)
    _serving_behind_proxy(app)

    config_check.init_app(app)
    crypto.init_app(app)  # before the store: the demo's migrations at start decrypt referrals they route
    store.init_app(app)
    directory_imports.init_app(app)  # flask directory import; each process loads a newer import
    security.init_app(app)
    i18n.init_app(app)
    phones.init_app(app)
    errors.init_app(app)
    retention.init_app(app)
    health.init_app(app)
    audit.init_app(app)
    profiles.init_app(app)  # refuses an EHR profile that cannot protect the note (restricted note type)
    worklist_routing.init_app(app)  # refuses malformed ehrs, roles or routing blocks, naming the entry
    launch_ehr.init_app(app)  # a page's calls to EHRs end before the proxy's timeout

    for blueprint in FEATURE_BLUEPRINTS:
        app.register_blueprint(blueprint)
    outbox_cli.init_app(app)  # flask outbox-worker, flask outbox-run-once
    leakcheck_cli.init_app(app)  # flask leak-check (DEPLOY.md, go-live)
    # Work the outbox worker does on its rounds besides sending (retention, the closed loop's status updates).
    # Last: routing what an older release wrote during a rolling upgrade, and keying referrals on the EHR their
    # iss belongs to under the deployment as it stands (smart_app/worklist/backfill.py).
    housekeeping.init_app(app, retention.purge, worklist_retention.purge_referrals, report_retention.purge,
                          worklist_backfill.route_stragglers, worklist_backfill.rekey_ehrs, kiosk_sessions.purge_idle)
    ratelimit.init_app(app)  # after the blueprints: limits attach to their views
    app.jinja_env.globals["url_if"] = _url_if
    app.context_processor(lambda: {"settings": current.current_settings()})  # templates read settings, typed
    templating.init_app(app)  # last before warm-up: the compiled templates are keyed by the finished environment
    warmup.init_app(app, launch_ehr.warm_up, referral_views.warm_up, writeback_views.warm_up)
    return app


def _split(test_config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A test's config: our settings (validated by the settings model, as the environment's and the files'
    are) and Flask's own keys (or its extensions'). Anything else is an error naming the key."""
    ours, flask_keys, unknown = {}, {}, []
    for key, value in test_config.items():
        if key.lower() in FLAT_NAMES:
            ours[key] = value
        elif key in Flask.default_config or key.startswith(_EXTENSION_PREFIXES):
            flask_keys[key] = value
        else:
            unknown.append(key)
    if unknown:
        raise SettingsError([f"create_app: {key}: unknown setting" for key in unknown])
    return flask_keys, ours


_EXTENSION_PREFIXES = ("WTF_", "RATELIMIT_", "BABEL_")


def _flask_config(settings: Settings) -> dict[str, Any]:
    """Flask's own keys, as the settings imply them."""
    embedded = settings.embedded_in_iframe
    return {
        "SECRET_KEY": settings.secret_key,
        "SESSION_COOKIE_SECURE": settings.cookie_secure,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "None" if embedded else "Lax",
        "SESSION_COOKIE_PARTITIONED": embedded,
        "SESSION_COOKIE_NAME": "ipv_session",
        # Flask 3.1 checks the Host header against TRUSTED_HOSTS; None = unchecked (see _serving_behind_proxy).
        "TRUSTED_HOSTS": list(settings.trusted_hosts) or None,
    }


def _url_if(endpoint: str, **values: Any) -> str | None:
    """url_for, or None when that feature's blueprint is not installed."""
    from flask import url_for
    from werkzeug.routing import BuildError

    try:
        return url_for(endpoint, **values)
    except BuildError:
        return None


def _serving_behind_proxy(app: Flask) -> None:
    """Trust X-Forwarded-* from exactly TRUSTED_PROXY_HOPS proxies, and answer only the trusted hosts.

    Behind a TLS-terminating proxy the app sees plain HTTP: without ProxyFix ``request.is_secure`` is false,
    Flask-WTF's HTTPS referrer check is skipped and redirects point at http://. Trusting more hops than there
    are proxies would let a client forge its address or scheme, so the count is explicit (default 0: ignored).
    """
    settings = current.settings_of(app)
    if app.config.get("TRUSTED_HOSTS") is None and config_check.run_mode(app) == "production":
        host = urlsplit(settings.app_base_url).hostname
        app.config["TRUSTED_HOSTS"] = [host] if host else None
    app.wsgi_app = _TrustedHosts(app.wsgi_app, app)  # type: ignore[method-assign]
    hops = settings.trusted_proxy_hops
    if hops:
        # Outermost, so the host check sees the Host the proxy forwarded (X-Forwarded-Host).
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops,  # type: ignore[method-assign]
                                x_port=hops, x_prefix=hops)


class _TrustedHosts:
    """400 for a Host not in TRUSTED_HOSTS, before Flask: Flask 3.1 checks TRUSTED_HOSTS while building the
    request context, outside its error handling, so a foreign Host became a 500."""

    def __init__(self, wsgi_app: Any, app: Flask):
        self.wsgi_app, self.app = wsgi_app, app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        trusted = self.app.config.get("TRUSTED_HOSTS")
        if trusted:
            try:
                get_host(environ, trusted)
            except SecurityError:
                return BadRequest("This host name is not served here.")(environ, start_response)
        return self.wsgi_app(environ, start_response)


def _dev_secrets(app: Flask) -> None:
    """The demo and the tests may run without configured secrets: keep generated ones in instance/ so a
    restart keeps sessions and encrypted records readable. In production ``config_check.enforce`` has
    already stopped a start without them."""
    settings = current.settings_of(app)
    missing = [k for k in ("SECRET_KEY", "TOKEN_ENCRYPTION_KEY") if not getattr(settings, k.lower())]
    if not missing:
        return
    if config_check.run_mode(app) == "production":
        raise RuntimeError(f"set {', '.join(missing)} in the environment (see README)")
    path = Path(app.instance_path) / "dev-secrets.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored.setdefault("SECRET_KEY", secrets.token_urlsafe(32))
    stored.setdefault("TOKEN_ENCRYPTION_KEY", Fernet.generate_key().decode())
    path.write_text(json.dumps(stored))
    path.chmod(0o600)
    current.replace_settings(app, **{key: stored[key] for key in missing})
    app.config["SECRET_KEY"] = current.settings_of(app).secret_key
