"""id_token checks (fhir/smart/id_token.py) at the unit level: the header read to pick the key, the key objects
built once per JWK, and every refusal still a plain IdTokenError."""

from __future__ import annotations

import base64
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from fhir.smart import id_token
from fhir.smart.id_token import IdTokenError, verify_id_token

ISS, CLIENT = "https://ehr.example/fhir", "app-1"


def _key(kid: str):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    jwk.update(kid=kid, alg="RS256", use="sig")
    return private, jwk


@pytest.fixture(scope="module")
def keys():
    return {kid: _key(kid) for kid in ("k1", "k2")}


def _token(private, kid: str | None, **claims) -> str:
    now = int(time.time())
    body = {"iss": ISS, "sub": "u1", "aud": CLIENT, "exp": now + 300, "iat": now, "nonce": "n-1", **claims}
    return jwt.encode(body, private, algorithm="RS256", headers={"kid": kid} if kid else None)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_header_is_read_as_pyjwt_reads_it(keys):
    private, _ = keys["k1"]
    for token in (_token(private, "k1"), _token(private, None)):
        assert id_token._unverified_header(token) == jwt.get_unverified_header(token)
    head, rest = _token(private, "k1").split(".", 1)
    padded = head + "=" * (-len(head) % 4) + "." + rest  # some issuers pad; PyJWT accepts it
    assert id_token._unverified_header(padded) == jwt.get_unverified_header(padded)


@pytest.mark.parametrize("token", [
    "a.b", "!!!.e30.sig", _b64(b"not json") + ".e30.sig", _b64(b"[1, 2]") + ".e30.sig",
    _b64(b'{"alg": "RS256", "kid": 7}') + ".e30.sig", _b64(b"[" * 5000 + b"]" * 5000) + ".e30.sig",
    "A" * 5000 + ".e30.sig", "\u00e9" + ".e30.sig",
])
def test_malformed_tokens_are_refused_plainly(keys, token):
    with pytest.raises(IdTokenError):
        verify_id_token(token, issuer=ISS, client_id=CLIENT, nonce="n-1", jwks={"keys": [keys["k1"][1]]})


def test_broken_payload_behind_a_good_header_is_refused(keys):
    private, jwk = keys["k1"]
    head, _payload, sig = _token(private, "k1").split(".")
    for payload in ("!!!", _b64(b"not json"), ""):
        with pytest.raises(IdTokenError):
            verify_id_token(f"{head}.{payload}.{sig}", issuer=ISS, client_id=CLIENT, nonce="n-1",
                            jwks={"keys": [jwk]})


def test_unsigned_and_hmac_tokens_are_refused(keys):
    for alg, key in (("HS256", "a-shared-secret-of-at-least-32-bytes"), ("none", None)):
        token = jwt.encode({"iss": ISS, "aud": CLIENT}, key, algorithm=alg, headers={"kid": "k1"})
        with pytest.raises(IdTokenError, match="accepted algorithm"):
            verify_id_token(token, issuer=ISS, client_id=CLIENT, nonce=None, jwks={"keys": [keys["k1"][1]]})


def test_key_objects_are_built_once_per_jwk(keys, monkeypatch):
    """Each JWK becomes a key object once per process; a rotated key (another JWK) gets its own, and a token
    signed by a key that was swapped out of the JWKS is refused."""
    id_token._parsed_key.cache_clear()
    built: list[str] = []
    real = jwt.PyJWK.from_dict

    def spy(data, algorithm=None):
        built.append(data["kid"])
        return real(data, algorithm=algorithm)

    monkeypatch.setattr(jwt.PyJWK, "from_dict", spy)
    (p1, j1), (p2, j2) = keys["k1"], keys["k2"]
    for _ in range(3):
        assert verify_id_token(_token(p1, "k1"), issuer=ISS, client_id=CLIENT, nonce="n-1",
                               jwks={"keys": [j1, j2]})["sub"] == "u1"
    assert built == ["k1"]
    assert verify_id_token(_token(p2, "k2"), issuer=ISS, client_id=CLIENT, nonce="n-1", jwks={"keys": [j1, j2]})
    assert built == ["k1", "k2"]
    swapped = dict(j1, n=j2["n"])  # same kid, another key: not the cached one
    with pytest.raises(IdTokenError, match="signature"):
        verify_id_token(_token(p1, "k1"), issuer=ISS, client_id=CLIENT, nonce="n-1", jwks={"keys": [swapped]})
