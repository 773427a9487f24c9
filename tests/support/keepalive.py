"""A WSGI server with HTTP/1.1 keep-alive, for serving the sandbox EHR as EHRs' own servers behave.

werkzeug's development server (LiveServer, the benches) ends every connection after one response (it always
sends ``Connection: close``), so an app calling it opens a new TCP connection per call whatever its pool
does. This small threaded server (tests only): one thread per connection, the request body read in full
before the application runs, the response buffered and sent with its Content-Length, the connection kept
for the next request until the client closes it, asks ``Connection: close`` or stays idle
``KEEP_ALIVE_SECONDS``. ``requests_seen`` lists (client address, method, path) of every request served, so a
test can tell which calls shared a connection. The environ carries ``werkzeug.socket`` (the sandbox's fault
injector drops connections with it).
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

KEEP_ALIVE_SECONDS = 15


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = KEEP_ALIVE_SECONDS  # socket timeout: an idle connection ends
    server: KeepAliveServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass  # quiet, as the tests and benches run werkzeug's with its logger at ERROR

    def _serve(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.send_error(411, "chunked request bodies are not supported here")
            self.close_connection = True
            return
        try:
            length = max(int(self.headers.get("Content-Length") or 0), 0)
        except ValueError:
            self.send_error(400, "bad Content-Length")
            self.close_connection = True
            return
        body = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        host, port = self.server.server_address[:2]
        environ: dict[str, Any] = {
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
            "werkzeug.socket": self.connection, "SERVER_SOFTWARE": "sandbox-keepalive", "REQUEST_METHOD": self.command,
            "SCRIPT_NAME": "", "PATH_INFO": unquote(url.path, "latin-1"), "QUERY_STRING": url.query,
            "REQUEST_URI": self.path, "RAW_URI": self.path, "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": self.client_address[1], "SERVER_NAME": str(host), "SERVER_PORT": str(port),
            "SERVER_PROTOCOL": self.request_version, "CONTENT_LENGTH": str(length) if length else "",
        }
        for key, value in self.headers.items():
            name = key.upper().replace("-", "_")
            if "_" in key or name in ("CONTENT_LENGTH",):
                continue
            name = name if name == "CONTENT_TYPE" else f"HTTP_{name}"
            environ[name] = f"{environ[name]},{value}" if name in environ else value
        started: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started[:] = [status, headers]
            return lambda data: chunks.append(data)

        chunks: list[bytes] = []
        with self.server.lock:
            self.server.requests_seen.append((self.client_address, self.command, url.path))
        result = self.server.app(environ, start_response)
        try:
            chunks.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        payload = b"".join(chunks)
        status, headers = started
        code, _, reason = status.partition(" ")
        self.send_response(int(code), reason)
        for name, value in headers:
            if name.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(name, value)
        if self.command != "HEAD" and int(code) not in (204, 304):
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD" and int(code) not in (204, 304):
            self.wfile.write(payload)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)


class KeepAliveServer(ThreadingHTTPServer):
    """``serve_forever()`` / ``shutdown()`` / ``server_port`` as werkzeug's server."""

    daemon_threads = True

    def __init__(self, host: str, port: int, app: Any):
        self.app = app
        self.lock = threading.Lock()
        self.requests_seen: list[tuple[tuple[str, int], str, str]] = []
        super().__init__((host, port), _Handler)  # sets server_port, as werkzeug's server has it


def serve_in_thread(server: KeepAliveServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@contextmanager
def sandbox_kept_alive(folder: Path) -> Iterator[tuple[SimpleNamespace, KeepAliveServer]]:
    """The sandbox EHR (its store in ``folder``) served on a free port by a ``KeepAliveServer``: yields the sandbox
    as the launch tests take it (``url``, ``iss``, ``app``) and the server (its ``requests_seen``); stopped on
    leaving."""
    from sandbox_ehr.app import create_sandbox_app

    ehr = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(folder / "ehr.db"),
                              "APP_LAUNCH_URL": "http://127.0.0.1:5000/launch"})
    server = KeepAliveServer("127.0.0.1", 0, ehr)
    url = f"http://127.0.0.1:{server.server_port}"
    ehr.config["SANDBOX_BASE_URL"] = url
    serve_in_thread(server)
    try:
        yield SimpleNamespace(url=url, iss=url + "/fhir", app=ehr), server
    finally:
        server.shutdown()
        server.server_close()
