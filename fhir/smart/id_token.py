"""OpenID Connect id_token verification for SMART (``openid fhirUser`` scopes).

Checks: signature with a key from the issuer's JWKS (``jwks_uri`` of the SMART
configuration), ``iss``, ``aud`` contains our client_id (``azp`` too when several
audiences), ``exp``, ``iat``, ``nonce``. Returns the claims, including ``fhirUser``.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from functools import lru_cache
from typing import Any

import jwt
import requests

from fhir import json_depth
from fhir.errors import FhirWireError
from fhir.smart.ttl_cache import RefreshingCache

ALLOWED_ALGS = ("RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384")
LEEWAY_SECONDS = 60  # clock skew between us and the EHR
MAX_IAT_AGE_SECONDS = 3600  # an id_token issued long ago is not from this login


class IdTokenError(FhirWireError):
    """The id_token is not acceptable; ``message`` is safe to show."""


class JwksCache:
    """JWKS per URL with a TTL, refreshed ahead in the background (fhir/smart/ttl_cache.py); re-read at once
    when a token names an unknown kid (key rotation)."""

    def __init__(self, ttl_seconds: float = 3600):
        self.ttl = ttl_seconds
        self._cache: RefreshingCache[dict[str, Any]] = RefreshingCache(ttl_seconds)

    def get(self, uri: str, *, http: requests.Session | None = None, timeout: float = 10.0,
            force: bool = False) -> dict[str, Any]:
        return self._cache.get(uri, lambda: _fetch_jwks(uri, http, timeout), force=force)

    def clear(self) -> None:
        self._cache.clear()


def _fetch_jwks(uri: str, http: requests.Session | None, timeout: float) -> dict[str, Any]:
    try:
        resp = (http or requests.Session()).get(uri, headers={"Accept": "application/json"}, timeout=timeout)
        jwks = json_depth.loads(resp.content) if resp.status_code == 200 else None
    except (requests.RequestException, ValueError):
        jwks = None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise IdTokenError("The EHR's signing keys (JWKS) could not be read.")
    return jwks


def prefetch_jwks(uri: str, *, http: requests.Session, timeout: float = 10.0) -> None:
    """Read an issuer's JWKS into the shared cache ahead of its first id_token (start-up warm-up)."""
    _default_cache.get(uri, http=http, timeout=timeout)


_default_cache = JwksCache()


def _key_for(header: dict[str, Any], jwks: dict[str, Any]) -> Any:
    alg = header.get("alg")
    kid = header.get("kid")
    candidates = [k for k in jwks.get("keys", []) if isinstance(k, dict)
                  and (kid is None or k.get("kid") == kid)
                  and k.get("use", "sig") == "sig"
                  and (k.get("alg") in (None, alg))]
    if not candidates:
        return None
    if len(candidates) > 1 and kid is None:
        raise IdTokenError("The id_token names no key and the EHR publishes several.")
    try:
        # A key of the wrong type or curve for ``alg`` (a mismatched JWK) is refused, not a crash.
        return _parsed_key(json.dumps(candidates[0], sort_keys=True), alg)
    except (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError):
        raise IdTokenError("The EHR's signing key does not fit the id_token's algorithm.") from None


@lru_cache(maxsize=64)
def _parsed_key(jwk: str, alg: str) -> Any:
    """The key object of one JWK (as canonical JSON) for ``alg``: built once per process, not per launch. A
    rotated key is different JSON, so a different entry."""
    return jwt.PyJWK.from_dict(json.loads(jwk), algorithm=alg).key


_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")  # trailing padding accepted, as PyJWT does
MAX_HEADER = 4096


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header (first segment only), used to pick the key and the algorithm; jwt.decode then parses
    and checks the whole token. (PyJWT's get_unverified_header decodes every segment character by character,
    and jwt.decode does it again.)"""
    segment = token.split(".", 1)[0]
    if len(segment) > MAX_HEADER or not _B64URL.fullmatch(segment):
        raise IdTokenError("The EHR returned a malformed id_token.")
    try:
        bare = segment.rstrip("=")
        header = json.loads(base64.urlsafe_b64decode(bare + "=" * (-len(bare) % 4)))
    except (ValueError, TypeError, RecursionError):
        raise IdTokenError("The EHR returned a malformed id_token.") from None
    if not isinstance(header, dict) or not isinstance(header.get("kid", ""), str):
        raise IdTokenError("The EHR returned a malformed id_token.")
    return header


def verify_id_token(token: str, *, issuer: str, client_id: str, nonce: str | None,
                    jwks: dict[str, Any] | None = None, jwks_uri: str | None = None,
                    http: requests.Session | None = None, timeout: float = 10.0,
                    cache: JwksCache | None = None, now: float | None = None,
                    leeway: int = LEEWAY_SECONDS) -> dict[str, Any]:
    """Verified claims of ``token``; raises IdTokenError on any failed check."""
    if not isinstance(token, str) or token.count(".") != 2:
        raise IdTokenError("The EHR returned a malformed id_token.")
    header = _unverified_header(token)
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGS:  # never "none", never an HMAC keyed by something public
        raise IdTokenError("The id_token is not signed with an accepted algorithm.")
    key = _signing_key(header, jwks, jwks_uri, http=http, timeout=timeout, cache=cache)
    claims = _decoded(token, key, alg, issuer=issuer, client_id=client_id, leeway=leeway)
    _check_times(claims, int(now if now is not None else time.time()), leeway)
    aud = claims.get("aud")
    if isinstance(aud, list) and len(aud) > 1 and claims.get("azp") != client_id:
        raise IdTokenError("The id_token was not issued to this app (azp).")
    # Bytes: compare_digest refuses non-ASCII str (a non-ASCII nonce was a 500).
    if nonce is not None and not secrets.compare_digest(str(claims.get("nonce", "")).encode(), nonce.encode()):
        raise IdTokenError("The id_token does not belong to this launch (nonce mismatch).")
    return claims


def _signing_key(header: dict[str, Any], jwks: dict[str, Any] | None, jwks_uri: str | None, *,
                 http: requests.Session | None, timeout: float, cache: JwksCache | None) -> Any:
    """The published key the header names: from ``jwks`` if given, else the issuer's JWKS (read again once when
    the kid is unknown, as after a key rotation)."""
    if jwks is None:
        if not jwks_uri:
            raise IdTokenError("The EHR publishes no jwks_uri to check its id_token with.")
        cache = cache or _default_cache
        key = _key_for(header, cache.get(jwks_uri, http=http, timeout=timeout))
        if key is None:  # maybe the EHR rotated its keys
            key = _key_for(header, cache.get(jwks_uri, http=http, timeout=timeout, force=True))
    else:
        key = _key_for(header, jwks)
    if key is None:
        raise IdTokenError("The id_token is signed with a key the EHR does not publish.")
    return key


def _decoded(token: str, key: Any, alg: str, *, issuer: str, client_id: str, leeway: int) -> dict[str, Any]:
    """Signature, audience, issuer and required claims checked by PyJWT; each failure with its own message."""
    try:
        return jwt.decode(
            token, key, algorithms=[alg], audience=client_id, issuer=issuer, leeway=leeway,
            options={"require": ["iss", "sub", "aud", "exp", "iat"], "verify_iat": False, "verify_exp": False},
        )
    except jwt.InvalidSignatureError:
        raise IdTokenError("The id_token signature is not valid.") from None
    except jwt.InvalidAudienceError:
        raise IdTokenError("The id_token was not issued to this app (aud).") from None
    except jwt.InvalidIssuerError:
        raise IdTokenError("The id_token was not issued by this EHR (iss).") from None
    except jwt.MissingRequiredClaimError as exc:
        raise IdTokenError(f"The id_token lacks the {exc.claim} claim.") from None
    except (jwt.PyJWTError, ValueError, TypeError):
        raise IdTokenError("The id_token could not be verified.") from None


def _check_times(claims: dict[str, Any], current: int, leeway: int) -> None:
    """Time checks by hand so a test can pin "now" and messages stay specific."""
    if not isinstance(claims.get("exp"), int | float) or claims["exp"] + leeway < current:
        raise IdTokenError("The id_token has expired.")
    if not isinstance(claims.get("iat"), int | float) or claims["iat"] - leeway > current \
            or claims["iat"] < current - MAX_IAT_AGE_SECONDS:
        raise IdTokenError("The id_token's issue time (iat) is not plausible.")


def fhir_user(claims: dict[str, Any]) -> str | None:
    """The ``fhirUser`` claim (``Practitioner/x`` or an absolute URL), if any."""
    value = claims.get("fhirUser") or claims.get("profile")  # 'profile' was SMART v1's name
    return value if isinstance(value, str) and value else None

