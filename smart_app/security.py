"""Response headers that keep traces out of the browser, and CSRF protection."""

from __future__ import annotations

from flask import Flask, Response, current_app
from flask_wtf.csrf import CSRFProtect

csrf = CSRFProtect()


def init_app(app: Flask) -> None:
    csrf.init_app(app)
    app.after_request(_no_trace_headers)


def _no_trace_headers(response: Response) -> Response:
    # Nothing the app shows may come back from cache or with Back.
    response.headers["Cache-Control"] = "no-store, max-age=0"
    response.headers["Pragma"] = "no-cache"
    response.headers["Expires"] = "0"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; "
        f"frame-ancestors {current_app.config['FRAME_ANCESTORS']}",
    )
    response.headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=()"
    return response
