"""Start-up warm-up (smart_app/ops/warmup.py): what a first request would otherwise pay is done at start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from config.current import replace_settings
from config.ehr_profile import PROFILES_DIR
from smart_app.launch import ehr
from smart_app.ops import templating, warmup
from tests.conftest import default_context
from tests.support.templates import counting_compiles


@pytest.fixture
def no_ehr(monkeypatch):
    monkeypatch.setattr(ehr, "prefetch_issuers", lambda: [])  # no allow-listed EHR is up in these tests


def test_every_page_template_is_compiled_at_start(app, no_ehr):
    app.jinja_env.cache.clear()
    warmup.warm_up(app)
    compiled = {key[1] for key in app.jinja_env.cache.keys()}
    for name in ("base.html", "screening/gate.html", "screening/instrument.html", "screening/result.html",
                 "referral/index.html", "writeback/consent.html", "writeback/confirmation.html"):
        assert name in compiled


@pytest.mark.parametrize("profile", sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
def test_the_made_up_plan_validates_for_every_bundled_profile(app, no_ehr, profile, caplog):
    replace_settings(app, EHR_PROFILE=profile)
    with caplog.at_level(logging.WARNING, logger="ipv.warmup"):
        warmup.warm_up(app)
    assert "not warmed" not in caplog.text


def test_the_patient_texts_are_read_at_start_not_in_a_referral_page(app, client, make_launch, no_ehr, monkeypatch):
    """content.yaml is parsed once at start: a worker's first referral pages (in every language) parse nothing."""
    import yaml

    from referrals.content import load_content
    from smart_app.referral.views import content_in

    content_in.cache_clear()
    load_content.cache_clear()
    warmup.warm_up(app)

    def no_parsing(*_a, **_k):
        raise AssertionError("content.yaml parsed in a request")

    monkeypatch.setattr(yaml, "safe_load", no_parsing)
    monkeypatch.setattr(yaml, "load", no_parsing)
    for lang, words in (("en", "Safety planning ideas"), ("es", "seguridad"), ("pt", "segurança")):
        lid = make_launch(client, context=default_context(patient={**default_context()["patient"], "language": lang}))
        html = client.get(f"/l/{lid}/referrals").get_data(as_text=True)
        assert 'data-testid="safety-ideas"' in html and words in html


def test_a_production_start_freezes_what_start_up_made_and_a_test_app_does_not(tmp_path, no_ehr):
    """A production start moves start-up's objects out of the cyclic collector (a full collection walking them
    cost a request 40-190 ms); a TESTING app, warmed up too, does not (it would keep every earlier test's app)."""
    import gc
    import os
    import secrets
    import subprocess
    import sys

    from cryptography.fernet import Fernet

    from smart_app import create_app
    from tests.conftest import app_config

    before = gc.get_freeze_count()
    app = create_app(app_config(f"sqlite:///{tmp_path / 'test.db'}", WARM_UP=True))
    app.extensions["db_engine"].dispose()
    assert gc.get_freeze_count() == before
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.db'}",
           "SECRET_KEY": secrets.token_urlsafe(32), "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
           "IPV_DEPLOYMENT": "sandbox", "IPV_MODE": "demo"}
    code = ("import gc\nfrom smart_app import create_app\napp = create_app()\n"
            "print(app.testing, gc.get_freeze_count())\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    assert out[0] == "False" and int(out[1]) > 100_000


def test_the_signing_key_is_parsed_at_start_not_in_a_request(app, client, no_ehr, monkeypatch):
    """The private_key_jwt key is parsed at start: a worker's first JWKS request or launch parses nothing."""
    from cryptography.hazmat.primitives import serialization

    from fhir.smart import client_auth

    client_auth._load_key.cache_clear()
    warmup.warm_up(app)

    def no_parsing(*_a, **_k):
        raise AssertionError("a private key parsed in a request")

    monkeypatch.setattr(serialization, "load_pem_private_key", no_parsing)
    keys = client.get("/.well-known/jwks.json").get_json()["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "RSA"


def test_a_later_start_loads_the_page_templates_compiled_by_an_earlier_one(app, client, make_launch, no_ehr,
                                                                           tmp_path, monkeypatch):
    cache_dir = tmp_path / "templates"
    cache_dir.mkdir()
    app.jinja_env.bytecode_cache = templating.CompiledTemplates(cache_dir, app.jinja_env, may_write=True)
    app.jinja_env.cache.clear()
    warmup.warm_up(app)  # the first start compiles and stores each template's code
    assert len(list(cache_dir.iterdir())) >= 7
    app.jinja_env.cache.clear()  # a new process: nothing compiled in memory
    compiled = counting_compiles(app, monkeypatch)
    warmup.warm_up(app)
    assert compiled == []
    assert client.get(f"/l/{make_launch(client)}/").status_code == 200  # pages render from the loaded code


def test_a_cut_or_foreign_cache_entry_is_compiled_again_not_an_error(app, client, make_launch, no_ehr, tmp_path,
                                                                      monkeypatch):
    cache_dir = tmp_path / "templates"
    cache_dir.mkdir()
    app.jinja_env.bytecode_cache = templating.CompiledTemplates(cache_dir, app.jinja_env, may_write=True)
    app.jinja_env.cache.clear()
    warmup.warm_up(app)
    for entry in cache_dir.iterdir():
        entry.write_bytes(entry.read_bytes()[:20])  # cut inside the header: a crash while writing, a full disk
    app.jinja_env.cache.clear()
    compiled = counting_compiles(app, monkeypatch)
    warmup.warm_up(app)
    assert "screening/gate.html" in compiled
    assert client.get(f"/l/{make_launch(client)}/").status_code == 200
