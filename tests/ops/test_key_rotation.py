"""Key rotation: "new,old" decrypts both and encrypts with the new; rotate-keys re-encrypts every stored value so
the old key can go — with queued chart writes and open referrals, nothing is lost; a value no key decrypts is
logged and shown as unreadable, never as empty; the JWKS publishes the current and the next signing key."""

from __future__ import annotations

import json
import re

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from config.current import replace_settings
from config.ehr_profile import EhrProfile
from smart_app import create_app
from smart_app.ops.audit import query_audit, record_audit
from smart_app.outbox.worker import OutboxWorker
from smart_app.store.crypto import decrypt_json, encrypt_json, encrypted_columns
from smart_app.store.db import session_scope
from smart_app.store.models import OutboxItem, ReferralRecord
from tests.conftest import app_config, default_context, store_launch
from tests.launch.test_launch_sandbox import KEYS
from tests.writeback.support import FakeEhr, add_launch, add_referral

pytestmark = pytest.mark.ops
ISS = "http://ehr.test/fhir"
PROFILE = "sandbox"


def make(url: str, keys: list[str]):
    return create_app(app_config(url, TOKEN_ENCRYPTION_KEY=",".join(keys)))


def every_value(app) -> dict[str, object]:
    """Every stored encrypted value, decrypted (raises if any cannot be)."""
    out = {}
    with app.app_context(), session_scope(app) as db:
        for table, column in encrypted_columns():
            pk = list(table.primary_key.columns)
            for row in db.execute(select(*pk, column).where(column.is_not(None), column != b"")):
                out[f"{table.name}.{column.name}:{row[:-1]}"] = decrypt_json(row[-1])
    return out


def social_worker_page(app) -> str:
    # The social worker covers the referrals' site (MGH Chelsea) through the deployment file (issue 11 scope).
    replace_settings(app, worklist={"coverage": {"roles": {"social_worker": ["urn:ipv-sandbox:site|mgh-chelsea"]}}})
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["bid"] = "sw-browser"
    ctx = default_context(patient=None, encounter=None,
                          user={"reference": "Practitioner/sw-1", "name": "Sam Social", "roles": ["social_worker"]})
    lid = store_launch(app, bid="sw-browser", context=ctx, iss=ISS, kind="standalone")
    return client.get(f"/l/{lid}/worklist").get_data(as_text=True)


def test_rotation_with_queued_writes_and_open_referrals_loses_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'rot.db'}"
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app1 = make(url, [old])
    profile = EhrProfile.load(PROFILE)
    referrals = []
    for i in range(3):  # three referrals, each with queued chart writes (EHR not called yet)
        lid = add_launch(app1, ISS, f"token-{i}", patient=f"pat-{i}")
        referrals.append(add_referral(app1, lid, ISS, profile, patient=f"pat-{i}",
                                      resources=["DocumentReference", "ServiceRequest"]))
    with app1.app_context():
        record_audit("export", actor="cli:test", patient={"id": "pat-0", "mrn": "MRN-0"})
    before = every_value(app1)
    assert len(before) >= 3 * 4
    app1.extensions["db_engine"].dispose()

    # Step 1: every process gets "new,old" (new encrypts, both decrypt).
    app2 = make(url, [new, old])
    assert every_value(app2) == before
    result = app2.test_cli_runner().invoke(args=["rotate-keys"])
    assert result.exit_code == 0, result.output
    assert "unreadable=1" not in result.output and "rotated=" in result.output
    again = app2.test_cli_runner().invoke(args=["rotate-keys"])
    assert "rotated=0" in again.output and "rotated=1" not in again.output  # idempotent
    app2.extensions["db_engine"].dispose()

    # Step 2: the old key is removed. Everything still reads, the queue shows every patient, writes go out.
    app3 = make(url, [new])
    assert every_value(app3) == before
    page = social_worker_page(app3)
    assert page.count("Test Patient") == 3 and "Unreadable" not in page
    with app3.app_context(), session_scope(app3) as db:
        assert all(r.status == "new" for r in db.scalars(select(ReferralRecord)))
        queued = {(r.kind, r.identifier_value): decrypt_json(r.resource_enc)
                  for r in db.scalars(select(OutboxItem))}
        assert len(queued) == 6 and all(r.status == "pending" for r in db.scalars(select(OutboxItem)))
        assert query_audit(db, patient="MRN-0")[0]["patient_id"] == "pat-0"
    ehr = FakeEhr()
    OutboxWorker(app3, client_for=ehr.client).drain()
    with app3.app_context(), session_scope(app3) as db:
        assert [r.status for r in db.scalars(select(OutboxItem))] == ["written"] * 6
    received = {(kind, res["identifier"][0]["value"] if isinstance(res["identifier"], list)
                 else res["identifier"]["value"]): res for (kind, _id), res in ehr.resources.items()}
    for key, resource in queued.items():  # what the EHR got is what was queued (links resolved to server ids)
        assert _content(received[key]) == _content(resource)
    app3.extensions["db_engine"].dispose()


def test_a_value_no_key_decrypts_is_logged_and_shown_never_empty(tmp_path, caplog):
    url = f"sqlite:///{tmp_path / 'lost.db'}"
    lost, current = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app_lost = make(url, [lost])
    profile = EhrProfile.load(PROFILE)
    lid = add_launch(app_lost, ISS, "token-x", patient="pat-x")
    add_referral(app_lost, lid, ISS, profile, patient="pat-x", resources=["DocumentReference"])
    app_lost.extensions["db_engine"].dispose()

    app = make(url, [current])
    caplog.set_level("ERROR", logger="ipv.crypto")
    result = app.test_cli_runner().invoke(args=["rotate-keys"])
    assert result.exit_code == 1 and "unreadable=1" in result.output
    assert any("cannot be decrypted" in r.getMessage() for r in caplog.records)

    page = social_worker_page(app)
    assert "Unreadable: encrypted with a key this server no longer has" in page
    # The queued write is kept pending (content intact), not failed; it says why.
    OutboxWorker(app, client_for=FakeEhr().client).run_once()
    with app.app_context(), session_scope(app) as db:
        [row] = db.scalars(select(OutboxItem))
        assert row.status == "pending" and "TOKEN_ENCRYPTION_KEY" in row.last_error
    # The clinician's launch page says the record cannot be read (not a blank page).
    client = app.test_client()
    with client.session_transaction() as sess:
        sess["bid"] = "worker-test"
    resp = client.get(f"/l/{lid}/result")
    assert resp.status_code == 500 and "cannot be read" in resp.get_data(as_text=True)
    app.extensions["db_engine"].dispose()

    # With the lost key back (second in the list), everything is readable again and rotation finishes.
    app_back = make(url, [current, lost])
    assert app_back.test_cli_runner().invoke(args=["rotate-keys"]).exit_code == 0
    app_back.extensions["db_engine"].dispose()
    assert "Test Patient" in social_worker_page(make(url, [current]))


def test_first_key_encrypts_all_keys_decrypt(app):
    k1, k2 = Fernet.generate_key(), Fernet.generate_key()
    with app.app_context():
        from smart_app.store.crypto import parse_keys

        keys = parse_keys(f"{k2.decode()}, {k1.decode()}")
        assert len(keys) == 2
        from cryptography.fernet import MultiFernet

        app.extensions["fernet_keys"], app.extensions["fernet"] = keys, MultiFernet(keys)
        token = encrypt_json({"a": 1})
        assert json.loads(Fernet(k2).decrypt(token)) == {"a": 1}  # the first key encrypts
        assert decrypt_json(Fernet(k1).encrypt(b'{"b": 2}')) == {"b": 2}  # the second still decrypts


def test_jwks_publishes_current_and_next_signing_keys_and_signs_with_current(app, client, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    next_pem = tmp_path / "next.pem"
    next_pem.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    replace_settings(app, client_id="ipv-screen-jwt", client_auth="private_key_jwt",
        private_key_file=str(KEYS / "rs384-private.pem"), key_id="current-1", signing_alg="RS384",
        next_private_key_file=str(next_pem), next_key_id="next-2")
    keys = client.get("/.well-known/jwks.json").get_json()["keys"]
    assert [k["kid"] for k in keys] == ["current-1", "next-2"]
    assert keys[0]["n"] != keys[1]["n"] and all("d" not in k for k in keys)  # public parts only

    import jwt

    from smart_app.launch.ehr import client_auth

    with app.app_context():
        data, headers = {}, {}
        client_auth().apply(data, headers, "https://ehr.example/token")
    assertion = data["client_assertion"]
    assert jwt.get_unverified_header(assertion)["kid"] == "current-1"
    current_pub = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(keys[0]))
    jwt.decode(assertion, current_pub, algorithms=["RS384"], audience="https://ehr.example/token")


def _content(resource: dict) -> str:
    body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
    return re.sub(r'"reference": "[^"]*"', '"reference": "*"', json.dumps(body, sort_keys=True))


@pytest.mark.postgres
def test_rotation_on_postgresql_re_encrypts_the_append_only_audit_and_nothing_else(postgres_url):
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    app1 = make(postgres_url, [old])
    lid = add_launch(app1, ISS, "token-pg", patient="pat-pg")
    add_referral(app1, lid, ISS, EhrProfile.load(PROFILE), patient="pat-pg", resources=["DocumentReference"])
    with app1.app_context():
        record_audit("export", actor="cli:test", patient={"id": "pat-pg", "mrn": "MRN-PG"})
    before = every_value(app1)
    app1.extensions["db_engine"].dispose()
    app2 = make(postgres_url, [new, old])
    result = app2.test_cli_runner().invoke(args=["rotate-keys"])
    assert result.exit_code == 0 and "audit_event.patient_enc: rotated=1" in result.output, result.output
    # The re-key permission covers patient_enc only: any other change is still refused.
    with pytest.raises(DBAPIError, match="append-only"), app2.extensions["db_engine"].begin() as conn:
        conn.execute(text("SELECT set_config('ipv.audit_rekey', 'on', true)"))
        conn.execute(text("UPDATE audit_event SET actor = 'someone-else'"))
    app2.extensions["db_engine"].dispose()
    app3 = make(postgres_url, [new])
    assert every_value(app3) == before
    app3.extensions["db_engine"].dispose()
