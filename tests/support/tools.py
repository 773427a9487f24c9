"""What the suite needs from the machine: PostgreSQL, Chromium (with Playwright and Chinese fonts), nginx, Redis,
PgBouncer and espeak-ng.

Every test or fixture that needs one of them asks here. A developer's run without a tool skips those tests and
says which tool is missing; under CI (``CI`` set to anything but empty/0/false: ``.ci/run`` exports ``CI=1``,
CI runners set ``CI=true``) the same absence fails them, so a run that lacks a tool can never end green on skips.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import NoReturn

import pytest
from sqlalchemy import create_engine, text

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ESPEAK = os.environ.get("ESPEAK", "/usr/bin/espeak-ng")
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
_FALSE = ("", "0", "false", "no", "off")


def under_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in _FALSE


def missing(tool: str, reason: str) -> NoReturn:
    """The test cannot run without ``tool``: skip it on a developer's machine, fail it under CI."""
    message = f"{tool} missing: {reason}"
    if under_ci():
        pytest.fail(f"{message} (CI is set: a missing tool fails the run instead of skipping)", pytrace=False)
    pytest.skip(message)


def chromium() -> str:
    """Debian's Chromium, for Playwright."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing("Chromium", f"no executable at {CHROMIUM} (apt-get install chromium; `make test` installs it)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing("Chromium", "the playwright package is not installed (make venv)")
    return CHROMIUM


def espeak() -> str:
    """Debian's espeak-ng, which makes the clinic tablet's "Listen" audio at build time (`make audio`)."""
    if not (os.path.isfile(ESPEAK) and os.access(ESPEAK, os.X_OK)):
        missing("espeak-ng", f"no executable at {ESPEAK} (apt-get install espeak-ng; `make test` installs it)")
    return ESPEAK


def cjk_fonts() -> None:
    """A Chinese font for Chromium (fontconfig's list for ``zh``): without one, Chinese text renders as boxes."""
    fc_list = shutil.which("fc-list")
    found = subprocess.run([fc_list, ":lang=zh", "family"], capture_output=True, text=True).stdout if fc_list else ""
    if not found.strip():
        missing("Chinese fonts", "fc-list :lang=zh lists none (apt-get install fonts-noto-cjk, as `make test` does)")


def nginx(path: str) -> str:
    """Debian's nginx at ``path``, for the reverse-proxy tests."""
    if not os.access(path, os.X_OK):
        missing("nginx", f"no executable at {path} (apt-get install nginx-light; `make test` installs it)")
    return path


def pgbouncer(path: str) -> str:
    """Debian's PgBouncer at ``path``, for the two-host stack run through it (deploy/pgbouncer.ini)."""
    if not os.access(path, os.X_OK):
        missing("PgBouncer", f"no executable at {path} (apt-get install pgbouncer; `.ci/run` installs it)")
    return path


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def redis_url(db: int = 0) -> str:
    """A Redis database on the machine's server (``.ci/run`` starts it when it is not running)."""
    if not _answers(REDIS_HOST, REDIS_PORT):
        missing("Redis", f"nothing answers on {REDIS_HOST}:{REDIS_PORT} (redis-server; `.ci/run` starts it)")
    return f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"


def postgres_base_url(*, optional: bool = False) -> str | None:
    """TEST_DATABASE_URL when it is set and its server answers.

    ``optional``: the caller runs on SQLite without PostgreSQL on a developer's machine (None); under CI it
    still fails, because CI runs those tests on PostgreSQL as a deployment does."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        problem = "TEST_DATABASE_URL is not set (e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test)"
    else:
        problem = _postgres_problem(url)
        if problem is None:
            return url
    if optional and not under_ci():
        return None
    missing("PostgreSQL", problem)


@cache
def _postgres_problem(url: str) -> str | None:
    """Why the server at ``url`` cannot be used (asked once per process), or None."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, connect_args={"connect_timeout": 3} if "psycopg" in url else {})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any driver's refusal: the point is to name it
        first = (str(exc).splitlines() or [""])[0]
        return f"TEST_DATABASE_URL is set but the server does not answer ({exc.__class__.__name__}: {first})"
    finally:
        engine.dispose()
    return None


@contextmanager
def postgres_schema(base: str, prefix: str = "t") -> Iterator[str]:
    """A fresh schema on ``base`` (a PostgreSQL URL), dropped afterwards; yields the URL whose search path it is."""
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
