"""Referral page and handout through the Flask test client with a launch (make_launch)."""

from __future__ import annotations

import re

import pytest

from smart_app.referral.views import content_in
from tests.conftest import default_context

DV_WORDS = re.compile(r"violen|abus|domestic|rape|assault|shelter|refugio|agresi|IPV|209A|crisis", re.I)


def visible_text(html: str) -> str:
    html = re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", html, flags=re.S)
    html = re.sub(r'src="data:[^"]+"', "", html)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


@pytest.fixture
def lid(client, make_launch):
    return make_launch(client)


def test_page_lists_haven_first_at_chelsea_with_reasons(client, lid):
    resp = client.get(f"/l/{lid}/referrals")
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"].startswith("no-store")
    html = resp.get_data(as_text=True)
    first = re.search(r'data-testid="result" data-service="([^"]+)"', html).group(1)
    assert first == "haven"
    assert "On site at this health center" in html and "On site at this hospital" not in html
    assert 'data-testid="protective-orders"' in html and "Clerk" in html
    assert 'data-testid="safety-ideas"' in html and "Safety planning ideas" in html


def test_search_is_post_redirect_get_and_zip_never_in_url(client, lid, app):
    resp = client.post(f"/l/{lid}/referrals", data={"action": "search", "safe_zip": "02151", "needs": ["legal"]})
    assert resp.status_code == 302
    assert "02151" not in resp.location
    html = client.get(resp.location).get_data(as_text=True)
    assert "miles from 02151" in html
    assert "Helps with legal help and protective orders (209A)" in html
    with app.test_request_context():
        from smart_app.launch.state import Launch
        from smart_app.store.db import get_session
        from smart_app.store.models import LaunchRecord

        ref = Launch(get_session().get(LaunchRecord, lid)).data["referral"]
    assert ref["safe_zip"] == "02151" and ref["needs"] == ["legal"]
    assert ref["site"] == "haven-chelsea"
    assert ref["results"][0]["service_id"] == "haven" and ref["results"][0]["why"]


def test_bad_zip_is_reported_without_putting_it_in_the_url(client, lid):
    resp = client.post(f"/l/{lid}/referrals", data={"action": "search", "safe_zip": "21S"})
    assert "21S" not in resp.location and "zip_error=1" in resp.location
    assert 'data-testid="zip-error"' in client.get(resp.location).get_data(as_text=True)


def test_selection_is_stored_and_safe_contact_is_not_asked_here(client, lid, app):
    """Safe contact is asked once, on the consent page (issue 8): the referral page neither asks nor stores it."""
    resp = client.post(f"/l/{lid}/referrals", data={"action": "save", "selected": ["haven", "not-listed"],
                                                    "channel": "text", "contact_note": "only before 3pm"})
    assert resp.status_code == 302
    with app.test_request_context():
        from smart_app.launch.state import Launch
        from smart_app.store.db import get_session
        from smart_app.store.models import LaunchRecord

        ref = Launch(get_session().get(LaunchRecord, lid)).data["referral"]
    assert ref["selected"] == ["haven"]
    assert "safe_contact" not in ref
    html = client.get(resp.location).get_data(as_text=True)
    assert 'name="channel"' not in html and 'data-testid="saved"' in html


def test_no_encounter_offers_the_deployments_default_programs_and_hotlines(client, make_launch):
    """No encounter: the deployment's default programs (Passageway and HAVEN) with their numbers, as the
    result page's urgent box lists both pagers; the hotlines as always."""
    lid = make_launch(client, context=default_context(encounter=None))
    html = client.get(f"/l/{lid}/referrals").get_data(as_text=True)
    assert "The launch does not say where this visit is" in html
    listed = re.findall(r'data-testid="result" data-service="([^"]+)"', html)
    assert listed[:2] == ["haven", "passageway"] or listed[:2] == ["passageway", "haven"]
    call_now = re.findall(r'data-testid="call-now-item" data-service="([^"]+)"', html)
    assert set(call_now) == {"passageway", "haven", "ma-safelink"}
    assert "1-877-785-2020" in html


def test_danger_shows_911_first(client, make_launch):
    lid = make_launch(client, data={"screening": {"interpretation": "positive", "danger": True}})
    html = client.get(f"/l/{lid}/referrals").get_data(as_text=True)
    assert html.index('data-testid="urgent"') < html.index('data-testid="results"')


def test_other_browser_gets_404(app, make_launch, client):
    lid = make_launch(client)
    other = app.test_client()
    assert other.get(f"/l/{lid}/referrals").status_code == 404
    assert other.get(f"/l/{lid}/handout").status_code == 404


def test_handout_is_discreet_and_lists_selected(client, lid):
    client.post(f"/l/{lid}/referrals", data={"action": "save", "selected": ["haven", "ma-safelink"],
                                             "channel": "none"})
    resp = client.get(f"/l/{lid}/handout")
    html = resp.get_data(as_text=True)
    text = visible_text(html)
    assert "<title>Health resources</title>" in html
    assert DV_WORDS.search(text) is None, DV_WORDS.search(text)
    assert text.count('Other times') == 1  # HAVEN's pager; SafeLink is 24/7
    assert "1-617-724-0054" in text and "1-877-785-2020" in text
    assert "1-617-732-8753" not in text  # Passageway was not selected
    assert "Rosa" not in text and "TEST-1" not in text  # no patient name on paper
    assert 'data-testid="qr"' not in html


def test_handout_in_patients_language_with_inline_qr(client, make_launch):
    ctx = default_context()
    ctx["patient"] = dict(ctx["patient"], language="es", languages=["es"])
    lid = make_launch(client, context=ctx)
    html = client.get(f"/l/{lid}/handout?qr=1").get_data(as_text=True)
    # The clinician's controls in the clinician's language, the printed part in the patient's.
    assert '<html lang="en" dir="ltr">' in html and 'data-audience="patient" lang="es"' in html
    assert "Recursos de salud" in html
    assert ">Print</button>" in html
    assert DV_WORDS.search(visible_text(html)) is None
    assert re.search(r'<img src="data:image/svg\+xml;base64,[A-Za-z0-9+/=]+"', html)
    # No external resources anywhere on the page.
    assert not re.search(r'(src|href)="https?://(?!www\.weather\.gov)', html)


def test_spanish_patient_sees_spanish_speaking_program_reason(client, make_launch):
    ctx = default_context()
    ctx["patient"] = dict(ctx["patient"], language="es", languages=["es"])
    lid = make_launch(client, context=ctx)
    html = client.get(f"/l/{lid}/referrals").get_data(as_text=True)
    assert '<html lang="en" dir="ltr">' in html  # the clinician's page; the patient section is in Spanish
    assert '<div lang="es" dir="ltr" data-audience="patient">' in html and "Órdenes de protección (209A)" in html
    passageway = html[html.index('data-service="passageway"'):]
    assert "Speaks Spanish" in passageway[:3000]


def test_app_serves_configured_directory_paths(tmp_path):
    from referrals.store import DEFAULT_DIRECTORY
    from smart_app import create_app
    from tests.conftest import app_config
    from tests.referrals import samples

    extra = samples.write_hsds_json(tmp_path / "extra.json")
    app = create_app(app_config(f"sqlite:///{tmp_path / 'a.db'}", DIRECTORY_PATHS=[str(DEFAULT_DIRECTORY), str(extra)]))
    from referrals.store import store_for

    ids = {e.service.id for e in store_for(app).index.entries}
    assert {"haven", "svc-chelsea-counsel"} <= ids
    app.extensions["db_engine"].dispose()


def test_app_refuses_to_start_with_a_broken_directory(tmp_path):
    from referrals.errors import DirectoryError
    from smart_app import create_app
    from tests.conftest import app_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("format: ipv-directory/1\nservices: []\n")
    with pytest.raises(DirectoryError, match="services: must be a non-empty list"):
        create_app(app_config(f"sqlite:///{tmp_path / 'a.db'}", DIRECTORY_PATHS=str(bad)))


def _patient_section(html: str) -> str:
    return re.search(r'data-testid="patient-section">(.*?)</details>', html, re.S).group(1)


def test_patient_section_is_each_launch_in_its_own_language(client, make_launch, app):
    """The section is rendered once per language and kept: a Spanish patient's page after an English one (and
    the other way round) still shows its own language, and exactly what the template renders from the content."""
    es_ctx = default_context()
    es_ctx["patient"] = dict(es_ctx["patient"], language="es", languages=["es"])
    english, spanish = make_launch(client), make_launch(client, context=es_ctx)
    for lid, lang, words in ((english, "en", "Safety planning ideas"), (spanish, "es", "Órdenes de protección (209A)"),
                             (english, "en", "Safety planning ideas"), (spanish, "es", "Órdenes de protección (209A)")):
        section = _patient_section(client.get(f"/l/{lid}/referrals").get_data(as_text=True))
        assert f'<div lang="{lang}" dir="ltr" data-audience="patient">' in section and words in section
        assert ("Órdenes de protección" in section) == (lang == "es")
    with app.app_context():
        content = content_in("es")
        direct = app.jinja_env.get_template("referral/_patient_info.html").render(
            po=content["protective_orders"], ideas=content["safety_ideas"], full=True)
    assert direct in _patient_section(client.get(f"/l/{spanish}/referrals").get_data(as_text=True))


def _referral_state(app, lid):
    with app.test_request_context():
        from smart_app.launch.state import Launch
        from smart_app.store.db import get_session
        from smart_app.store.models import LaunchRecord

        return Launch(get_session().get(LaunchRecord, lid)).data.get("referral") or {}


def test_the_sites_program_is_ticked_by_default_and_a_referral_to_no_program_is_refused(client, make_launch, app):
    from sqlalchemy import func, select

    from smart_app.store.models import ReferralRecord
    from tests.writeback.support import SCREENING, consent

    lid = make_launch(client, data={"screening": dict(SCREENING)}, iss="http://127.0.0.1:9/fhir")
    html = client.get(f"/l/{lid}/referrals").get_data(as_text=True)
    # The visit's program (HAVEN at MGH Chelsea), the one the handout falls back to; not the 24/7 line.
    assert re.search(r'value="haven"\s+checked', html)
    assert not re.search(r'value="ma-safelink"\s+checked', html)
    assert _referral_state(app, lid)["selected"] == ["haven"]
    # Reached before the programs page, the consent page takes the same default.
    other_client = app.test_client()
    other = make_launch(other_client, data={"screening": dict(SCREENING)}, iss="http://127.0.0.1:9/fhir")
    page = other_client.get(f"/l/{other}/consent").get_data(as_text=True)
    assert "HAVEN at MGH" in page and 'data-testid="consent-error"' not in page
    # The clinician clears every program: the consent page says so and nothing can be written.
    client.post(f"/l/{lid}/referrals", data={"action": "save"})
    assert _referral_state(app, lid)["selected"] == []
    page = client.get(f"/l/{lid}/consent").get_data(as_text=True)
    assert 'data-testid="consent-error"' in page and "programs page" in page
    resp = consent(client, lid, channel="phone")
    assert resp.status_code == 422 and "Nothing was written" in resp.get_data(as_text=True)
    with app.app_context():
        from smart_app.store.db import session_scope

        with session_scope(app) as db:
            assert db.scalar(select(func.count()).select_from(ReferralRecord)) == 0


def test_the_handout_keeps_the_24_7_line_until_the_clinician_chooses(client, lid):
    client.get(f"/l/{lid}/referrals")  # the site's program ticked by default
    html = client.get(f"/l/{lid}/handout").get_data(as_text=True)
    assert "HAVEN" in html and "877-785-2020" in html
    client.post(f"/l/{lid}/referrals", data={"action": "save", "selected": ["haven"]})
    assert "877-785-2020" not in client.get(f"/l/{lid}/handout").get_data(as_text=True).split('data-testid="card"')[1]


ABUSE_WORDS = ("abuse", "abusive", "abusiva", "abusivo", "agresor", "agressor", "abuso")


@pytest.mark.parametrize("lang", ["en", "es", "pt"])
def test_full_page_handout_cautions_first_and_never_names_the_abuser_on_its_first_printed_page(client, lid, lang):
    card = client.get(f"/l/{lid}/handout?lang={lang}").get_data(as_text=True)
    assert 'data-testid="card-default"' in card and 'data-testid="print-caution"' not in card  # the card: default
    assert 'data-testid="handout-more"' not in card
    page = client.get(f"/l/{lid}/handout?lang={lang}&layout=page").get_data(as_text=True)
    # The caution comes before the Print button, which waits for the patient's word (static/print.js).
    caution = page.index('data-testid="print-caution"')
    assert caution < page.index('data-testid="print"') and 'data-print-confirm="safe-to-carry"' in page
    assert "only if the patient says it is safe to carry" in visible_text(page.split('data-testid="print-caution"')[1]
                                                                          .split("</div>")[0])
    main = page.split('data-testid="handout"')[1]
    first_page, rest = main.split('class="protective-orders new-page"')
    assert 'data-testid="safety-ideas"' in first_page and 'data-testid="card"' in first_page
    assert not any(w in visible_text(first_page).lower() for w in ABUSE_WORDS), visible_text(first_page)
    assert "209A" in rest  # the protective orders are still there, on a page of their own


def test_two_launches_at_one_site_share_the_rendered_programs_but_never_each_others_choices(app, client, make_launch):
    """The ranked programs are rendered once per site, hour, language and ticked programs (programs_html): a second
    clinician's page at the same site reuses it, and a choice or a ZIP made in one launch shows only in that launch's
    page."""
    app.extensions.pop("ipv_programs_html", None)
    lid = make_launch(client)
    other_client = app.test_client()
    other = make_launch(other_client)
    first = client.get(f"/l/{lid}/referrals").get_data(as_text=True)
    assert other_client.get(f"/l/{other}/referrals").get_data(as_text=True).count('data-testid="result"') == \
        first.count('data-testid="result"')
    assert len(app.extensions["ipv_programs_html"]) == 1  # one rendering for both pages
    client.post(f"/l/{lid}/referrals", data={"action": "save", "selected": ["ma-safelink"]})
    mine = client.get(f"/l/{lid}/referrals").get_data(as_text=True)
    theirs = other_client.get(f"/l/{other}/referrals").get_data(as_text=True)
    assert re.search(r'value="ma-safelink"\s+checked', mine) and not re.search(r'value="haven"\s+checked', mine)
    assert re.search(r'value="haven"\s+checked', theirs) and not re.search(r'value="ma-safelink"\s+checked', theirs)
    client.post(f"/l/{lid}/referrals", data={"action": "search", "safe_zip": "02151"})
    assert "miles from 02151" in client.get(f"/l/{lid}/referrals").get_data(as_text=True)
    assert "02151" not in other_client.get(f"/l/{other}/referrals").get_data(as_text=True)
