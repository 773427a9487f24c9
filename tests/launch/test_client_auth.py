"""Client authentication kinds, and private_key_jwt assertions for RS384 and ES384."""

from __future__ import annotations

import base64
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from config.settings import load_settings
from fhir.smart.client_auth import (
    ASSERTION_TYPE,
    ClientAuth,
    ClientAuthError,
    load_private_key,
    make_client_assertion,
    public_jwk,
)

KEYS = Path(__file__).resolve().parents[2] / "sandbox_ehr" / "keys"
TOKEN_URL = "https://ehr.example/token"


@pytest.mark.parametrize("alg,stem", [("RS384", "rs384"), ("ES384", "es384")])
def test_assertion_claims_and_signature(alg, stem):
    key = load_private_key(KEYS / f"{stem}-private.pem")
    pub = (KEYS / f"{stem}-public.pem").read_bytes()
    token = make_client_assertion(client_id="app", token_endpoint=TOKEN_URL, private_key=key, alg=alg,
                                  kid=f"sandbox-{stem}", now=1_700_000_000)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == alg and header["kid"] == f"sandbox-{stem}" and header["typ"] == "JWT"
    claims = jwt.decode(token, pub, algorithms=[alg], audience=TOKEN_URL, options={"verify_exp": False})
    assert claims["iss"] == claims["sub"] == "app"
    assert claims["aud"] == TOKEN_URL
    assert 0 < claims["exp"] - claims["iat"] <= 300
    # A token signed with the other algorithm's key does not verify with this one.
    other = load_private_key(KEYS / f"{'es384' if stem == 'rs384' else 'rs384'}-private.pem")
    other_alg = "ES384" if alg == "RS384" else "RS384"
    forged = make_client_assertion(client_id="app", token_endpoint=TOKEN_URL, private_key=other, alg=other_alg,
                                   kid=None)
    with pytest.raises(jwt.PyJWTError):
        jwt.decode(forged, pub, algorithms=[alg], audience=TOKEN_URL)


def test_assertion_lifetime_is_capped_at_five_minutes():
    key = load_private_key(KEYS / "rs384-private.pem")
    token = make_client_assertion(client_id="app", token_endpoint=TOKEN_URL, private_key=key, alg="RS384",
                                  kid=None, lifetime=3600)
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 300


def test_jti_unique_and_never_reused():
    key = load_private_key(KEYS / "es384-private.pem")
    seen: set[str] = set()
    offered: list[str] = []

    def register(jti: str) -> bool:
        offered.append(jti)
        if len(offered) == 1:
            seen.add(jti)
            return False  # pretend the first one was already used: a new one must be drawn
        if jti in seen:
            return False
        seen.add(jti)
        return True

    tokens = [make_client_assertion(client_id="app", token_endpoint=TOKEN_URL, private_key=key, alg="ES384",
                                    kid="k", register_jti=register) for _ in range(20)]
    jtis = [jwt.decode(t, options={"verify_signature": False})["jti"] for t in tokens]
    assert len(set(jtis)) == 20
    assert offered[0] not in jtis


def test_wrong_key_type_for_alg_is_refused():
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    p256 = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ClientAuthError):
        make_client_assertion(client_id="a", token_endpoint=TOKEN_URL, private_key=rsa_key, alg="ES384", kid=None)
    with pytest.raises(ClientAuthError):
        make_client_assertion(client_id="a", token_endpoint=TOKEN_URL, private_key=p256, alg="ES384", kid=None)
    with pytest.raises(ClientAuthError):
        make_client_assertion(client_id="a", token_endpoint=TOKEN_URL, private_key=rsa_key, alg="HS256", kid=None)


def test_apply_for_each_kind():
    data, headers = {}, {}
    ClientAuth(client_id="app").apply(data, headers, TOKEN_URL)
    assert data == {"client_id": "app"} and headers == {}

    data, headers = {}, {}
    ClientAuth(client_id="app:1", kind="client_secret_basic", client_secret="s&cret").apply(data, headers, TOKEN_URL)
    assert data == {}
    assert base64.b64decode(headers["Authorization"].split()[1]) == b"app%3A1:s%26cret"

    data, headers = {}, {}
    ClientAuth(client_id="app", kind="client_secret_post", client_secret="s").apply(data, headers, TOKEN_URL)
    assert data == {"client_id": "app", "client_secret": "s"} and headers == {}

    data, headers = {}, {}
    ClientAuth(client_id="app", kind="private_key_jwt", private_key=load_private_key(KEYS / "rs384-private.pem"),
               alg="RS384", kid="sandbox-rs384").apply(data, headers, TOKEN_URL)
    assert data["client_assertion_type"] == ASSERTION_TYPE
    assert jwt.decode(data["client_assertion"], (KEYS / "rs384-public.pem").read_bytes(), algorithms=["RS384"],
                      audience=TOKEN_URL)["sub"] == "app"
    assert "client_secret" not in data


def test_misconfiguration_is_caught_early():
    with pytest.raises(ClientAuthError):
        ClientAuth(client_id="a", kind="client_secret_basic")
    with pytest.raises(ClientAuthError):
        ClientAuth(client_id="a", kind="private_key_jwt")
    with pytest.raises(ClientAuthError):
        ClientAuth(client_id="a", kind="magic")


def test_from_deployment_and_public_jwk():
    dep = load_settings({"IPV_DEPLOYMENT": "sandbox"})
    auth = ClientAuth.from_deployment(dep)
    assert auth.kind == "private_key_jwt" and auth.kid == "sandbox-rs384"
    jwk = public_jwk(auth.private_key, "RS384", "sandbox-rs384")
    assert jwk["kty"] == "RSA" and jwk["kid"] == "sandbox-rs384" and "d" not in jwk
    ec_jwk = public_jwk(load_private_key(KEYS / "es384-private.pem"), "ES384", "sandbox-es384")
    assert ec_jwk["crv"] == "P-384" and "d" not in ec_jwk


def test_private_key_is_parsed_once_and_reread_when_the_file_changes(tmp_path):
    import os
    import shutil

    path = tmp_path / "key.pem"
    shutil.copy(KEYS / "rs384-private.pem", path)
    first = load_private_key(path)
    assert load_private_key(path) is first  # cached: no second parse per token request
    shutil.copy(KEYS / "es384-private.pem", path)
    os.utime(path, ns=(1, 1))  # a different mtime, as a replaced file has
    assert load_private_key(path) is not first


def test_a_key_link_pointed_at_another_file_is_read_again(tmp_path):
    """Rotation by symlink (deployments that point ``current.pem`` at the new key): a new key object, even if
    the new file has the old one's mtime."""
    import os
    import shutil

    old, new, link = tmp_path / "old.pem", tmp_path / "new.pem", tmp_path / "current.pem"
    shutil.copy(KEYS / "rs384-private.pem", old)
    shutil.copy(KEYS / "es384-private.pem", new)
    os.utime(new, ns=(os.stat(old).st_atime_ns, os.stat(old).st_mtime_ns))
    link.symlink_to(old)
    first = load_private_key(link)
    link.unlink()
    link.symlink_to(new)
    assert load_private_key(link) is not first
    assert load_private_key(link).public_key().public_numbers() == load_private_key(new).public_key().public_numbers()
