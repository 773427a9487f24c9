"""Client authentication at the token endpoint (SMART App Launch 2.2, section "Client
authentication"): public (``none``), confidential symmetric (``client_secret_basic`` /
``client_secret_post``) and confidential asymmetric (``private_key_jwt``, RS384 or ES384).
"""

from __future__ import annotations

import base64
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from requests.auth import HTTPBasicAuth

from fhir.http import no_auth

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SUPPORTED_ALGS = ("RS384", "ES384")
MAX_ASSERTION_LIFETIME = 300  # SMART: exp no more than five minutes in the future
KINDS = ("none", "client_secret_basic", "client_secret_post", "private_key_jwt")


class ClientAuthError(Exception):
    """Misconfigured client authentication (a deployment problem, not user input)."""


class _MemoryJtiRegistry:
    """Fallback jti registry for use outside the app (the app records jti in UsedJti)."""

    def __init__(self) -> None:
        self._seen: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, jti: str) -> bool:
        with self._lock:
            if jti in self._seen:
                return False
            self._seen.add(jti)
            return True


def load_private_key(path: str | Path) -> Any:
    """The PEM key at ``path``, parsed once per process: parsing and validating an RSA key is slow enough to
    show in every token request and JWKS fetch (docs/decisions/0002-start-up-work.md). A file replaced on disk
    (new mtime or size, as in a key rotation) is read again. The file's identity (device, inode: stat follows a
    symlink, so a link pointed at another key is another entry) keys the cache, not its resolved path (realpath
    costs more than the look-up it serves)."""
    st = os.stat(path)
    return _load_key(os.path.abspath(path), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=16)
def _load_key(path: str, dev: int, ino: int, mtime_ns: int, size: int) -> Any:  # all but path: cache key only
    return serialization.load_pem_private_key(Path(path).read_bytes(), password=None)


def _check_key(key: Any, alg: str) -> None:
    if alg not in SUPPORTED_ALGS:
        raise ClientAuthError(f"signing_alg {alg} is not supported (use RS384 or ES384)")
    if alg == "RS384" and not isinstance(key, rsa.RSAPrivateKey):
        raise ClientAuthError("RS384 needs an RSA private key")
    if alg == "ES384" and not (isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"):
        raise ClientAuthError("ES384 needs a P-384 EC private key")


def make_client_assertion(*, client_id: str, token_endpoint: str, private_key: Any, alg: str,
                          kid: str | None, lifetime: int = MAX_ASSERTION_LIFETIME,
                          register_jti: Callable[[str], bool] | None = None, now: float | None = None) -> str:
    """A signed JWT for ``private_key_jwt``: iss = sub = client_id, aud = token endpoint,
    a fresh jti (never reused: ``register_jti`` returns False for one already used), exp <= 5 min."""
    _check_key(private_key, alg)
    lifetime = min(int(lifetime), MAX_ASSERTION_LIFETIME)
    issued = int(now if now is not None else time.time())
    for _ in range(5):
        jti = secrets.token_urlsafe(32)
        if register_jti is None or register_jti(jti):
            break
    else:  # five collisions of 256-bit randoms means the registry is broken
        raise ClientAuthError("could not obtain a unique jti")
    claims = {"iss": client_id, "sub": client_id, "aud": token_endpoint, "jti": jti,
              "iat": issued, "exp": issued + lifetime}
    headers = {"typ": "JWT", "kid": kid} if kid else {"typ": "JWT"}
    return jwt.encode(claims, private_key, algorithm=alg, headers=headers)


def public_jwk(private_key: Any, alg: str, kid: str | None) -> dict[str, Any]:
    """The public half of our signing key as a JWK (for /.well-known/jwks.json)."""
    _check_key(private_key, alg)
    pub = private_key.public_key()
    if alg == "RS384":
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(pub, as_dict=True)
    else:
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(pub, as_dict=True)
    jwk.update({"alg": alg, "use": "sig", "key_ops": ["verify"]})
    if kid:
        jwk["kid"] = kid
    return jwk


@dataclass
class ClientAuth:
    """How this client proves itself at the token endpoint."""

    client_id: str
    kind: str = "none"
    client_secret: str | None = None
    private_key: Any = None
    alg: str = "RS384"
    kid: str | None = None
    register_jti: Callable[[str], bool] | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ClientAuthError(f"client_auth {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.kind.startswith("client_secret") and not self.client_secret:
            raise ClientAuthError(f"{self.kind} needs a client_secret (env CLIENT_SECRET)")
        if self.kind == "private_key_jwt":
            if self.private_key is None:
                raise ClientAuthError("private_key_jwt needs private_key_file")
            _check_key(self.private_key, self.alg)
        if self.register_jti is None:
            self.register_jti = _MemoryJtiRegistry()

    @classmethod
    def from_deployment(cls, deployment: Any, register_jti: Callable[[str], bool] | None = None) -> ClientAuth:
        key = None
        if deployment.client_auth == "private_key_jwt":
            if not deployment.private_key_file:
                raise ClientAuthError("private_key_jwt needs private_key_file")
            key = load_private_key(deployment.private_key_file)
        return cls(client_id=deployment.client_id, kind=deployment.client_auth,
                   client_secret=deployment.client_secret, private_key=key, alg=deployment.signing_alg,
                   kid=deployment.key_id, register_jti=register_jti)

    def oauth_kwargs(self, token_endpoint: str, *, refresh: bool = False) -> dict[str, Any]:
        """Keyword arguments for requests-oauthlib's ``fetch_token`` / ``refresh_token`` that authenticate
        this client as ``apply`` does (the same wire format)."""
        if self.kind == "client_secret_basic":
            # RFC 6749 2.3.1: form-urlencode id and secret before base64 (requests' HTTPBasicAuth does not).
            auth = HTTPBasicAuth(quote(self.client_id, safe=""), quote(self.client_secret or "", safe=""))
            return {"auth": auth, "include_client_id": False}
        if self.kind == "private_key_jwt":
            extra = {"client_assertion_type": ASSERTION_TYPE, "client_assertion": make_client_assertion(
                client_id=self.client_id, token_endpoint=token_endpoint, private_key=self.private_key,
                alg=self.alg, kid=self.kid, register_jti=self.register_jti)}
            # An explicit no-op auth keeps requests-oauthlib from adding a Basic header of its own.
            return {"auth": no_auth, "include_client_id": False, **extra}
        secret = {"client_secret": self.client_secret or ""} if self.kind == "client_secret_post" else {}
        if refresh:  # refresh_token() has no include_client_id: the id goes in as a body parameter
            return {"auth": no_auth, "client_id": self.client_id, **secret}
        return {"include_client_id": True, **secret}

    def apply(self, data: dict[str, str], headers: dict[str, str], token_endpoint: str) -> None:
        """Add this client's credentials to a token request (form ``data`` and ``headers``)."""
        if self.kind == "none":
            data["client_id"] = self.client_id
        elif self.kind == "client_secret_basic":
            # RFC 6749 2.3.1: form-urlencode id and secret before base64.
            raw = f"{quote(self.client_id, safe='')}:{quote(self.client_secret or '', safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(raw.encode()).decode()
        elif self.kind == "client_secret_post":
            data["client_id"] = self.client_id
            data["client_secret"] = self.client_secret or ""
        else:
            data["client_assertion_type"] = ASSERTION_TYPE
            data["client_assertion"] = make_client_assertion(
                client_id=self.client_id, token_endpoint=token_endpoint, private_key=self.private_key,
                alg=self.alg, kid=self.kid, register_jti=self.register_jti)
