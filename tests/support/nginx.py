"""Debian's nginx run by a test with its own main configuration in the test's folder (never the system service):
the folders nginx writes to, its pid and its error log all there, and the ``http`` block the test gives.

``start_nginx`` is a fixture (tests/conftest.py imports it): ``start_nginx(http_block)`` starts nginx in the
foreground and returns its process; nginx is stopped when the test ends.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import tools
from tests.support.tls import NGINX

TEMP_FOLDERS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
MAIN_CONF = """
user root;
daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
events {{ worker_connections {connections}; }}
http {{
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    {http}
}}
"""
READY_SECONDS = 10


def _wait_listening(process: subprocess.Popen, port: int, error_log: Path) -> None:
    """Until nginx accepts on ``port`` (it binds after reading the configuration)."""
    deadline = time.monotonic() + READY_SECONDS
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                return
        except OSError:
            assert process.poll() is None, error_log.read_text() if error_log.exists() else "nginx exited"
            assert time.monotonic() < deadline, f"nginx not listening on {port} after {READY_SECONDS} s"
            time.sleep(0.05)


@pytest.fixture
def start_nginx(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen]]:
    nginx = tools.nginx(NGINX)
    started: list[subprocess.Popen] = []

    def start(http: str, *, connections: int = 64, listening: int | None = None) -> subprocess.Popen:
        """nginx with ``http`` inside its http block; ``listening``: a port to wait for before returning."""
        for folder in TEMP_FOLDERS:
            (tmp_path / folder).mkdir(exist_ok=True)
        conf = tmp_path / "nginx.conf"
        conf.write_text(MAIN_CONF.format(folder=tmp_path, connections=connections, http=http))
        error_log = tmp_path / "error.log"
        process = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf), "-e", str(error_log)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        started.append(process)
        if listening is not None:
            _wait_listening(process, listening, error_log)
        return process

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
