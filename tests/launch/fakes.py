"""A requests transport adapter that answers from Python functions and records every call
(for unit tests of discovery, token exchange and context reads without a network)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter

from config.current import replace_settings

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
            status, body, *rest = handler(request)  # (status, body) or (status, body, headers)
            if rest:
                resp.headers.update(rest[0])
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


class FakeEhr:
    """A minimal SMART EHR behind a FakeAdapter, for what a real EHR would never do on purpose:
    sign a bad id_token, send the wrong aud, an expired token, another launch's nonce.

    Set ``nonce`` from the authorize URL the app produced; ``id_token_claims`` overrides claims;
    ``tamper`` rewrites the encoded id_token; ``token_extra`` is merged into the token response.
    """

    ISS = "https://fake-ehr.test/fhir"

    def __init__(self, client_id: str) -> None:
        import secrets

        from cryptography.hazmat.primitives.asymmetric import rsa

        self.client_id = client_id
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(8)
        self.nonce: str | None = None
        self.id_token_claims: dict[str, Any] = {}
        self.tamper: Callable[[str], str] | None = None
        self.token_extra: dict[str, Any] = {}
        self.token_status = 200
        self.adapter = FakeAdapter()
        root = self.ISS.rsplit("/", 1)[0]
        self.adapter.add("GET", self.ISS + "/.well-known/smart-configuration", (200, {
            "issuer": self.ISS, "jwks_uri": root + "/auth/jwks", "authorization_endpoint": root + "/auth/authorize",
            "token_endpoint": root + "/auth/token", "code_challenge_methods_supported": ["S256"],
            "capabilities": ["launch-ehr", "client-public", "sso-openid-connect"]}))
        self.adapter.add("GET", root + "/auth/jwks", lambda _r: (200, self.jwks()))
        self.adapter.add("POST", root + "/auth/token", lambda _r: (self.token_status, self.token_response()))
        self.adapter.add("GET", self.ISS + "/Patient/p1", (200, {
            "resourceType": "Patient", "id": "p1", "name": [{"given": ["Fake"], "family": "Patient"}]}))
        self.adapter.add("GET", self.ISS + "/Practitioner/d1", (200, {
            "resourceType": "Practitioner", "id": "d1", "name": [{"given": ["Dee"], "family": "Doctor"}]}))

    def jwks(self) -> dict[str, Any]:
        import jwt

        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        jwk.update(kid=self.kid, alg="RS256", use="sig")
        return {"keys": [jwk]}

    def id_token(self) -> str:
        import time

        import jwt

        now = int(time.time())
        claims = {"iss": self.ISS, "sub": "d1", "aud": self.client_id, "iat": now, "exp": now + 300,
                  "nonce": self.nonce, "fhirUser": self.ISS + "/Practitioner/d1"}
        claims.update(self.id_token_claims)
        claims = {k: v for k, v in claims.items() if v is not None}
        token = jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})
        return self.tamper(token) if self.tamper else token

    def token_response(self) -> dict[str, Any]:
        if self.token_status != 200:
            return {"error": "invalid_grant", "error_description": "code expired"}
        body = {"access_token": "fake-access", "token_type": "Bearer", "expires_in": 3600,
                "scope": "launch openid fhirUser patient/*.rs", "patient": "p1", "id_token": self.id_token()}
        body.update(self.token_extra)
        return body


def install_fake_ehr(app: Any, client_id: str) -> FakeEhr:
    """Point ``app`` at a new FakeEhr: a public client with this id, the fake's iss allow-listed, and every
    outbound call answered by the fake."""
    ehr = FakeEhr(client_id)
    replace_settings(app, client_id=client_id, client_auth="none",
                                                   scopes_ehr="launch openid fhirUser patient/*.rs")
    replace_settings(app, ALLOWED_ISS=[FakeEhr.ISS])
    app.extensions["smart_http"] = ehr.adapter.session()
    return ehr
