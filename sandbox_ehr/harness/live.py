"""Run a WSGI app on a real port in a background thread (sandbox EHR, app for the browser)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from werkzeug.serving import BaseWSGIServer, make_server


class PooledWSGIServer(BaseWSGIServer):
    """A server with a fixed number of request threads, as gunicorn's gthread worker has: a connection beyond
    them waits in the queue until a thread is free (unlike werkzeug's thread per request)."""

    def __init__(self, host: str, port: int, app, threads: int):
        super().__init__(host, port, app)
        self.pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="live-pool")

    def process_request(self, request, client_address):  # noqa: ANN001 - socketserver's signature
        self.pool.submit(self._handle, request, client_address)

    def _handle(self, request, client_address) -> None:  # noqa: ANN001
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - socketserver's own reporting
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=False, cancel_futures=True)


class LiveServer:
    """``threads``: a fixed pool of request threads (PooledWSGIServer); None: a thread per request."""

    def __init__(self, wsgi_app, host: str = "127.0.0.1", port: int = 0, threads: int | None = None):
        if threads is None:
            self._server = make_server(host, port, wsgi_app, threaded=True)
        else:
            self._server = PooledWSGIServer(host, port, wsgi_app, threads)
        self.host = host
        self.port = self._server.server_port
        self.url = f"http://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
