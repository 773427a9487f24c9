"""Universal education for every patient: the words and the wallet card at the start of every check-in, in the
patient's language with the clinician's beneath, also on the "not now" path; only the offer is recorded, once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from babel.messages.pofile import read_po
from sqlalchemy import func, select

from config.languages import language, translated_codes
from smart_app.screening import education
from smart_app.store.db import session_scope
from smart_app.store.models import ReportEvent
from tests.worklist.support import EHR1, clinician_context

pytestmark = pytest.mark.education
TRANSLATIONS = Path(__file__).resolve().parents[2] / "smart_app" / "translations"


def _events(app, kind: str) -> int:
    with app.app_context(), session_scope(app) as db:
        return db.scalar(select(func.count()).select_from(ReportEvent).where(ReportEvent.kind == kind))


def _said(page: str) -> list[tuple[str, str]]:
    """(lang, text) of every read-aloud line of the education step, patient's and clinician's."""
    start = page.index('data-testid="education"')
    section = page[start:page.index("</section>", start)]
    return re.findall(r'data-audience="(?:patient|clinician)" lang="([a-z]+)"[^>]*>([^<]+)<', section)


@pytest.mark.parametrize("lang", translated_codes())
def test_every_patient_language_has_the_script_and_the_cards_line(lang):
    locale = language(lang).locale
    with (TRANSLATIONS / locale / "LC_MESSAGES" / "messages.po").open("rb") as f:
        catalog = read_po(f, locale=locale)
    for line in (*education.SCRIPT, education.NOT_ALONE):
        message = catalog.get(line)
        assert message is not None and message.string, (lang, line[:40])


def test_the_sources_are_cited():
    cited = " ".join(s["citation"] for s in education.sources())
    assert "CUES" in cited and "Miller E" in cited and "Contraception. 2016;94(1):58-67" in cited


def test_the_gate_offers_the_words_and_the_card_and_records_only_the_offer_once(app, make_launch):
    client = app.test_client()
    lid = make_launch(client, context=clinician_context("bwh", "p-es", "Rosa Edu", language="es"), iss=EHR1)
    page = client.get(f"/l/{lid}/").get_data(as_text=True)
    assert page.index('data-testid="education"') < page.index('class="gate"')  # at the start, before anything
    said = _said(page)
    assert [lang for lang, _ in said] == ["es", "en"] * len(education.SCRIPT)
    assert said[0][1].startswith("Antes de empezar") and said[1][1].startswith("Before we start")
    assert f'href="/l/{lid}/handout"' in page  # the discreet wallet card
    assert _events(app, "checkin") == 1 and _events(app, "education_offered") == 0
    resp = client.post(f"/l/{lid}/education", data={"back": "start", "answer": "took it"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/l/{lid}/#education")
    client.post(f"/l/{lid}/education", data={"back": "start"})
    page = client.get(f"/l/{lid}/").get_data(as_text=True)
    assert 'data-testid="education-done"' in page and 'data-testid="education-form"' not in page
    assert _events(app, "checkin") == 1 and _events(app, "education_offered") == 1
    with app.app_context(), session_scope(app) as db:
        rows = db.execute(select(ReportEvent.kind, ReportEvent.site, ReportEvent.instrument,
                                 ReportEvent.language)).all()
    assert sorted(rows) == [("checkin", "bwh", "", ""), ("education_offered", "bwh", "", "")]  # nothing else kept


def test_not_alone_the_card_is_still_offered_with_its_neutral_line_only(app, make_launch):
    client = app.test_client()
    lid = make_launch(client, context=clinician_context("bwh", "p-pt", "Ana Edu", language="pt"), iss=EHR1)
    client.post(f"/l/{lid}/gate", data={"action": "not_now"})
    page = client.get(f"/l/{lid}/not-now").get_data(as_text=True)
    said = _said(page)
    assert [lang for lang, _ in said] == ["pt", "en"]
    assert said[1][1] == education.NOT_ALONE
    assert "Before we start" not in page  # the confidentiality script is for a patient who is alone
    resp = client.post(f"/l/{lid}/education", data={"back": "not_now"})
    assert resp.headers["Location"].endswith(f"/l/{lid}/not-now#education")
    assert _events(app, "education_offered") == 1 and _events(app, "checkin") == 1
