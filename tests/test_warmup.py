"""Start-up warm-up (smart_app/warmup.py): what a first request would otherwise pay is done at start."""

from __future__ import annotations

import logging

import pytest

from fhir.builders import PROFILES_DIR
from smart_app import warmup
from tests.conftest import default_context


@pytest.fixture
def no_ehr(monkeypatch):
    monkeypatch.setattr(warmup, "prefetch_issuers", lambda: [])  # no allow-listed EHR is up in these tests


def test_every_page_template_is_compiled_at_start(app, no_ehr):
    app.jinja_env.cache.clear()
    warmup.warm_up(app)
    compiled = {key[1] for key in app.jinja_env.cache.keys()}
    for name in ("base.html", "screening/gate.html", "screening/instrument.html", "screening/result.html",
                 "referral/index.html", "writeback/consent.html", "writeback/confirmation.html"):
        assert name in compiled


@pytest.mark.parametrize("profile", sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
def test_the_made_up_plan_validates_for_every_bundled_profile(app, no_ehr, profile, caplog):
    app.config["EHR_PROFILE"] = profile
    with caplog.at_level(logging.WARNING, logger="ipv.warmup"):
        warmup.warm_up(app)
    assert "not warmed" not in caplog.text


def test_the_patient_texts_are_read_at_start_not_in_a_referral_page(app, client, make_launch, no_ehr, monkeypatch):
    """content.yaml is parsed once at start: a worker's first referral pages (in every language) parse nothing."""
    import yaml

    from referrals.content import load_content
    from smart_app.blueprints.referral import content_in

    content_in.cache_clear()
    load_content.cache_clear()
    warmup.warm_up(app)

    def no_parsing(*_a, **_k):
        raise AssertionError("content.yaml parsed in a request")

    monkeypatch.setattr(yaml, "safe_load", no_parsing)
    for lang, words in (("en", "Safety planning ideas"), ("es", "seguridad"), ("pt", "segurança")):
        lid = make_launch(client, context=default_context(patient={**default_context()["patient"], "language": lang}))
        html = client.get(f"/l/{lid}/referrals").get_data(as_text=True)
        assert 'data-testid="safety-ideas"' in html and words in html
