"""The shipped access-log formats keep no query string and no referrer: /callback?code=…&state=… (a live
authorization code) and any other query never reach nginx's or gunicorn's access log. nginx runs the shipped
log_format (deploy/nginx-ipv.conf); gunicorn formats a request with the shipped access_log_format
(config/gunicorn.conf.py) through its own logger."""

from __future__ import annotations

import re
import runpy
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from gunicorn.config import Config
from gunicorn.glogging import Logger

from tests.support.tls import _free_port

pytestmark = pytest.mark.ops

ROOT = Path(__file__).resolve().parents[2]
NGINX_SITE = ROOT / "deploy" / "nginx-ipv.conf"
GUNICORN_CONF = ROOT / "config" / "gunicorn.conf.py"
SECRETS = ("SECRET-CODE", "SECRET-STATE", "REFERRER-CODE", "QUERY-VALUE")
CALLS = [("/callback", "code=SECRET-CODE&state=SECRET-STATE"), ("/l/abc123/more", "q=QUERY-VALUE")]
REFERER = "https://ehr.example.org/launch?code=REFERRER-CODE"
# What would put a query or a referrer in nginx's log.
NGINX_QUERY_VARIABLES = ("$request ", '$request"', "$request_uri", "$args", "$query_string", "$arg_",
                         "$http_referer", "$is_args")


def _log_format() -> tuple[str, str]:
    """The shipped log_format statement and its name."""
    match = re.search(r"^log_format\s+(\w+)\s+(.*?);\s*$", NGINX_SITE.read_text(), re.M | re.S)
    assert match, "deploy/nginx-ipv.conf defines no log_format"
    return match.group(0), match.group(1)


def test_every_nginx_access_log_uses_the_format_without_queries():
    statement, name = _log_format()
    assert not any(variable in statement for variable in NGINX_QUERY_VARIABLES), statement
    logs = re.findall(r"^\s*access_log\s+([^;]+);", NGINX_SITE.read_text(), re.M)
    servers = NGINX_SITE.read_text().count("server {")
    assert len(logs) == servers and all(log.split()[-1] == name for log in logs), logs


def _logged(path: Path, lines: int) -> str:
    """The access log once it holds ``lines`` lines: nginx writes a request's line after its answer has been sent."""
    deadline = time.monotonic() + 10
    while True:
        log = path.read_text() if path.exists() else ""
        if log.count("\n") >= lines or time.monotonic() > deadline:
            return log
        time.sleep(0.05)


def test_nginx_logs_paths_without_queries_or_referrers(tmp_path, start_nginx):
    statement, name = _log_format()
    port = _free_port()
    start_nginx(f"""
    {statement}
    server {{
        listen 127.0.0.1:{port};
        access_log {tmp_path}/access.log {name};
        location / {{ return 200 "ok\\n"; }}
    }}
""", connections=16, listening=port)
    for path, query in CALLS:
        answer = requests.get(f"http://127.0.0.1:{port}{path}?{query}", headers={"Referer": REFERER}, timeout=5)
        assert answer.status_code == 200
    log = _logged(tmp_path / "access.log", len(CALLS))
    assert '"GET /callback HTTP/1.1" 200' in log and '"GET /l/abc123/more HTTP/1.1" 200' in log
    assert not any(secret in log for secret in SECRETS) and "?" not in log, log


def test_gunicorn_logs_paths_without_queries_or_referrers(tmp_path, monkeypatch):
    for key in ("GUNICORN_WORKERS", "GUNICORN_THREADS"):
        monkeypatch.delenv(key, raising=False)
    shipped = runpy.run_path(str(GUNICORN_CONF))
    assert "%(r)s" not in shipped["access_log_format"] and "%(q)s" not in shipped["access_log_format"]
    assert "%(f)s" not in shipped["access_log_format"]
    cfg = Config()
    cfg.set("accesslog", str(tmp_path / "access.log"))
    cfg.set("access_log_format", shipped["access_log_format"])
    logger = Logger(cfg)
    for path, query in CALLS:
        environ = {"REQUEST_METHOD": "GET", "RAW_URI": f"{path}?{query}", "PATH_INFO": path,
                   "QUERY_STRING": query, "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
                   "HTTP_REFERER": REFERER, "HTTP_USER_AGENT": "test"}
        logger.access(SimpleNamespace(status="200 OK", sent=3, headers=[]),
                      SimpleNamespace(headers=[("X-REQUEST-ID", "rid-1")]), environ, timedelta(milliseconds=5))
    for handler in logger.access_log.handlers:
        handler.flush()
    log = _logged(tmp_path / "access.log", len(CALLS))
    assert '"GET /callback HTTP/1.1" 200' in log and '"GET /l/abc123/more HTTP/1.1" 200' in log and "rid-1" in log
    assert not any(secret in log for secret in SECRETS) and "?" not in log, log
    # The app reads the thread count this file chose (its bulkhead is sized from it).
    assert shipped["raw_env"] == [f"GUNICORN_THREADS={shipped['threads']}"]
