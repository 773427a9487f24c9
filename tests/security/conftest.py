"""Fixtures for the outside review's regression tests: the app with a fake EHR that misbehaves on
purpose (tests/launch/fakes.py), and helpers to run a launch through /launch and /callback."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from smart_app.store.crypto import decrypt_json
from smart_app.store.models import LaunchRecord
from tests.launch.fakes import FakeEhr, install_fake_ehr

CLIENT_ID = "fake-app"
ROOT = FakeEhr.ISS.rsplit("/", 1)[0]


@pytest.fixture
def fake(app):
    return install_fake_ehr(app, CLIENT_ID)


def start(client, fake: FakeEhr, iss: str = FakeEhr.ISS) -> dict[str, str]:
    resp = client.get(f"/launch?iss={quote(iss)}&launch=L1")
    assert resp.status_code == 302, resp.get_data(as_text=True)
    query = {k: v[0] for k, v in parse_qs(urlsplit(resp.headers["Location"]).query).items()}
    fake.nonce = query.get("nonce")
    return query


def launch(client, fake: FakeEhr, code: str = "code-1") -> str:
    """A whole EHR launch through the fake; returns the launch id."""
    q = start(client, fake)
    resp = client.get(f"/callback?code={code}&state={q['state']}")
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return resp.headers["Location"].split("/")[2]


def record(app, lid: str) -> LaunchRecord:
    with app.app_context():
        from smart_app.store.db import get_session

        rec = get_session().get(LaunchRecord, lid)
        get_session().expunge(rec)
        return rec


def context_of(app, lid: str) -> dict[str, Any]:
    with app.app_context():
        return decrypt_json(record(app, lid).context_enc) or {}


def bid_of(client) -> str | None:
    with client.session_transaction() as sess:
        return sess.get("bid")
