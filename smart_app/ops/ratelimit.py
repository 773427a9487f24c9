"""Rate limits with Flask-Limiter, per client address (behind the reverse proxy, ProxyFix gives
the real one).

- ``/launch`` and ``/launch/standalone``: ``tuning.ratelimit_launch`` (each writes a pending launch row).
- ``/callback``: ``tuning.ratelimit_callback`` (each may call the EHR's token endpoint).
- Every POST of the social-work worklist (status changes, contact log): ``tuning.ratelimit_actions``.
  Quick exit and the end-of-launch beacons are never limited.

Storage: RATELIMIT_STORAGE_URI, ``redis://127.0.0.1:6379`` in production so every worker shares the
counts; ``memory://`` for the demo and tests. If Redis is unreachable the limiter falls back to memory
rather than refusing clinicians (RATELIMIT_IN_MEMORY_FALLBACK_ENABLED). A refused request gets a plain
429 page with Retry-After.
"""

from __future__ import annotations

from flask import Flask, render_template
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from werkzeug.exceptions import TooManyRequests

from config.current import current_settings, settings_of

NEVER_LIMITED = {"exit.quick_exit", "exit.close_launch", "exit.launch_alive", "static"}
# Blueprints whose POSTs get tuning.ratelimit_actions: the social-work worklist actions. Not the clinical pages (a
# clinic behind one NAT address must never be stopped mid-screening or mid-consent) and not the CDS Hooks
# service (its calls come from the EHR's servers and carry their own signed JWT).
ACTION_BLUEPRINTS = {"worklist"}
# A tablet's pairing code shares the launch limit: each try is a guess at a live code.
LAUNCH_ENDPOINTS = {"launch.ehr_launch", "launch.standalone_launch", "kiosk.pair"}
CALLBACK_ENDPOINTS = {"launch.callback"}


def _limit(name: str):
    return lambda: getattr(current_settings(), name)


def init_app(app: Flask) -> Limiter:
    """Call after the blueprints are registered: limits are attached to the registered views."""
    app.config["RATELIMIT_STORAGE_URI"] = settings_of(app).ratelimit_storage_uri
    app.config.setdefault("RATELIMIT_KEY_PREFIX", "ipv-rl")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    app.config.setdefault("RATELIMIT_SWALLOW_ERRORS", True)
    app.config.setdefault("RATELIMIT_IN_MEMORY_FALLBACK_ENABLED", True)
    limiter = Limiter(get_remote_address, app=app)
    # Every limit here is on a view (the wrappers below check it as the view is called); the app has no
    # default or application-wide limit, so Flask-Limiter's own before-request check only resolved, for every
    # request, that nothing applies (most of the limiter's cost on a clinical page).
    # (Not there at all when RATELIMIT_ENABLED is off.)
    hooks = app.before_request_funcs.get(None, [])
    if limiter._check_request_limit in hooks:
        hooks.remove(limiter._check_request_limit)
    for rule in app.url_map.iter_rules():
        endpoint = rule.endpoint
        if endpoint in NEVER_LIMITED or endpoint not in app.view_functions:
            continue
        if endpoint in LAUNCH_ENDPOINTS:
            key, methods = "ratelimit_launch", None
        elif endpoint in CALLBACK_ENDPOINTS:
            key, methods = "ratelimit_callback", None
        elif "POST" in (rule.methods or ()) and endpoint.split(".", 1)[0] in ACTION_BLUEPRINTS:
            key, methods = "ratelimit_actions", ["POST"]
        else:
            continue
        app.view_functions[endpoint] = limiter.limit(_limit(key), methods=methods)(app.view_functions[endpoint])
    app.register_error_handler(TooManyRequests, _too_many)
    app.extensions["ipv_limiter"] = limiter
    return limiter


def _too_many(exc: TooManyRequests):
    response = render_template(
        "error.html", title="Too many requests",
        message="This computer sent too many requests in a short time. Wait a minute, then try again.")
    return response, 429
