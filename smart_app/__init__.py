"""Flask application factory (flaskr style): extensions via init_app, one blueprint per feature."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from flask import Flask


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    from config.settings import flask_config

    app.config.update(flask_config())
    if test_config:
        app.config.update(test_config)
    _dev_secrets(app)
    from smart_app import observability

    observability.init_app(app)  # JSON logs, request id, /metrics (before anything logs)

    from smart_app import audit, crypto, db, errors, health, i18n, profiles, retention, security

    db.init_app(app)
    crypto.init_app(app)
    security.init_app(app)
    i18n.init_app(app)
    errors.init_app(app)
    retention.init_app(app)
    health.init_app(app)
    audit.init_app(app)
    profiles.init_app(app)  # refuses an EHR profile that cannot protect the note (restricted note type)

    from smart_app.blueprints import register_blueprints

    register_blueprints(app)
    from smart_app import ratelimit

    ratelimit.init_app(app)  # after the blueprints: limits attach to their views
    app.jinja_env.globals["url_if"] = _url_if
    if app.config.get("WARM_UP", not app.testing):
        from smart_app.warmup import warm_up

        warm_up(app)
    return app


def _url_if(endpoint: str, **values: Any) -> str | None:
    """url_for, or None when that feature's blueprint is not installed."""
    from flask import url_for
    from werkzeug.routing import BuildError

    try:
        return url_for(endpoint, **values)
    except BuildError:
        return None


def _dev_secrets(app: Flask) -> None:
    """The sandbox deployment may run without configured secrets: keep generated ones in
    instance/ so a restart keeps sessions and encrypted records readable. Elsewhere
    missing secrets stop start-up."""
    missing = [k for k in ("SECRET_KEY", "TOKEN_ENCRYPTION_KEY") if not app.config.get(k)]
    if not missing:
        return
    if app.config["DEPLOYMENT"].name != "sandbox" and not app.testing:
        raise RuntimeError(f"set {', '.join(missing)} in the environment (see README)")
    path = Path(app.instance_path) / "dev-secrets.json"
    stored = json.loads(path.read_text()) if path.exists() else {}
    stored.setdefault("SECRET_KEY", secrets.token_urlsafe(32))
    stored.setdefault("TOKEN_ENCRYPTION_KEY", Fernet.generate_key().decode())
    path.write_text(json.dumps(stored))
    path.chmod(0o600)
    for key in missing:
        app.config[key] = stored[key]
