"""A requests transport adapter that answers from Python functions and records every call
(for unit tests of discovery, token exchange and context reads without a network)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter

Handler = Callable[[requests.PreparedRequest], tuple[int, Any]]


class FakeAdapter(BaseAdapter):
    def __init__(self) -> None:
        super().__init__()
        self.routes: dict[tuple[str, str], Handler] = {}
        self.calls: list[requests.PreparedRequest] = []

    def add(self, method: str, url: str, handler: Handler | tuple[int, Any]) -> None:
        self.routes[(method.upper(), url)] = handler if callable(handler) else (lambda _r, h=handler: h)

    def send(self, request, **kwargs):  # noqa: ANN001 - requests' adapter signature
        self.calls.append(request)
        parts = urlsplit(request.url)
        key = (request.method, f"{parts.scheme}://{parts.netloc}{parts.path}")
        resp = requests.Response()
        resp.request = request
        resp.url = request.url
        handler = self.routes.get(key)
        if handler is None:
            status, body = 404, {"error": "not found"}
        else:
            status, body = handler(request)
        resp.status_code = status
        resp.reason = "OK" if status < 400 else "Error"
        if isinstance(body, bytes | str):
            resp._content = body.encode() if isinstance(body, str) else body
        else:
            resp._content = json.dumps(body).encode()
            resp.headers["Content-Type"] = "application/json"
        return resp

    def close(self) -> None:
        pass

    def session(self) -> requests.Session:
        s = requests.Session()
        s.mount("http://", self)
        s.mount("https://", self)
        return s
