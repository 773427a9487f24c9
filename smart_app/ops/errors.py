"""Clear error pages: a 4xx with a plain message for bad input, never a stack trace."""

from __future__ import annotations

import logging

from flask import Flask, Response, g, render_template
from flask.globals import request_ctx
from werkzeug.exceptions import HTTPException, InternalServerError

from smart_app.ops.observability import LAUNCH_FAILURES
from smart_app.store.crypto import Undecryptable

log = logging.getLogger(__name__)


class LaunchError(Exception):
    """A launch cannot go on; ``message`` is safe to show (no PHI, no secrets)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(LaunchError, _launch_error)
    app.register_error_handler(Undecryptable, _undecryptable)
    app.register_error_handler(Exception, _unexpected)


def _http_error(exc: HTTPException):
    if request_ctx and request_ctx.url_adapter is None:
        # The Host is not trusted (TRUSTED_HOSTS): no URL may be built, so no page with links either.
        return Response(f"{exc.code} {exc.name}", status=exc.code, mimetype="text/plain")
    return render_template("error.html", title=exc.name, message=exc.description), exc.code


def _launch_error(exc: LaunchError):
    log.warning("launch refused: %s", exc.message)
    LAUNCH_FAILURES.labels(str(exc.status)).inc()
    return render_template("error.html", title="Launch stopped", message=exc.message), exc.status


def _undecryptable(_exc: Undecryptable):
    # Logged where it happened (smart_app.store.crypto): which kind of record, never its content.
    g.pop("launch", None)  # the page must not try to show the unreadable launch (banner, language)
    return render_template(
        "error.html", title="This record cannot be read",
        message="It was encrypted with a key this server no longer has, so it cannot be shown. Nothing was "
                "changed or deleted. Tell your IT team (encryption key rotation).",
    ), 500


def _unexpected(exc: Exception):
    if isinstance(exc, HTTPException):
        return _http_error(exc)
    # Type only: exception text can carry PHI from an EHR response.
    log.error("unexpected error: %s", type(exc).__name__)
    err = InternalServerError()
    return render_template(
        "error.html", title="Something went wrong",
        message="The app could not finish this step. Nothing was written to the chart. "
                "Close this window and launch the app again.",
    ), err.code
