"""The Spanish catalog covers every string in the code and the committed .mo matches the .po."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "smart_app" / "translations" / "es" / "LC_MESSAGES" / "messages.po"
MO = PO.with_suffix(".mo")


def catalog():
    with PO.open("rb") as f:
        return read_po(f, locale="es")


def test_every_string_on_the_screening_pages_has_a_spanish_translation(tmp_path):
    # Only the pages this feature renders: other features' new strings are extracted by the catalog owner
    # (smart_app/translations/README.md) and must not break this feature's tests in between.
    cfg = tmp_path / "babel.cfg"
    cfg.write_text("[jinja2: smart_app/screening/templates/screening/**.html]\n"
                   "[jinja2: smart_app/templates/base.html]\n"
                   "[jinja2: smart_app/templates/_patient_banner.html]\n")
    pot = tmp_path / "messages.pot"
    subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract", "-F", str(cfg), "-k", "p_",
                    "-o", str(pot), "--no-location", "."], check=True, cwd=ROOT, capture_output=True)
    with pot.open("rb") as f:
        wanted = {m.id for m in read_po(f) if m.id}
    assert len(wanted) > 30  # the extraction really found the pages' strings
    translated = {m.id for m in catalog() if m.id and m.string and "fuzzy" not in m.flags}
    assert sorted(wanted - translated) == []


def _forms(value):
    """A message's id or string as its forms: one, or a plural's several (a list in the .mo, a tuple in the .po)."""
    return tuple(value) if isinstance(value, list | tuple) else (value,)


def test_committed_mo_matches_the_po():
    with MO.open("rb") as f:
        mo = {_forms(m.id): _forms(m.string) for m in read_mo(f) if m.id}
    po = {_forms(m.id): _forms(m.string) for m in catalog() if m.id and m.string and "fuzzy" not in m.flags}
    assert mo == po


def test_placeholders_survive_translation():
    import re

    for m in catalog():
        if m.id and m.string:
            wanted = sorted(re.findall(r"%\(\w+\)s", _forms(m.id)[-1]))
            for form in _forms(m.string):
                assert sorted(re.findall(r"%\(\w+\)s", form)) == wanted, m.id


def test_every_questionnaire_has_spanish_for_every_text_and_says_it_is_not_validated():
    from fhir.questionnaires import load_instruments

    for key, inst in load_instruments().items():
        status = inst.translation_status["es"]
        assert status["status"] in ("published", "unconfirmed")
        if status["status"] == "unconfirmed":
            assert "translation for clinician read-aloud, not a validated version" in status["note"], key
        assert "es" in inst.title
        for item in inst.items:
            assert "es" in item.text, (key, item.link_id)
            for a in item.answers:
                assert "es" in a.display, (key, item.link_id, a.code)


def test_app_translates_with_the_committed_catalog(app):
    from flask_babel import force_locale, gettext

    with app.test_request_context(), force_locale("es"):
        assert gettext("Quick exit") == "Salida rápida"


def test_gettext_follows_the_locale_within_one_request(app):
    """The catalog is looked up once per request and locale: a language switched in the middle of a request
    (force_locale, p_) is honoured at once and undone after, for the app's gettext, p_ and templates' _()."""
    from flask import g, render_template_string
    from flask_babel import force_locale

    from smart_app.ops.i18n import gettext, patient_gettext

    with app.test_request_context():
        g.locale = "en"
        assert gettext("Quick exit") == "Quick exit"
        with force_locale("es"):
            assert gettext("Quick exit") == "Salida rápida"
            assert render_template_string("{{ _('Quick exit') }}") == "Salida rápida"
        assert gettext("Quick exit") == "Quick exit"
        g.patient_locale = "pt"
        assert patient_gettext("Quick exit") == "Saída rápida"
        assert render_template_string("{{ p_('Quick exit') }} / {{ _('Quick exit') }}") == "Saída rápida / Quick exit"
        g.patient_locale = "es"
        assert patient_gettext("Quick exit") == "Salida rápida"


def test_template_gettext_escapes_its_parameters_and_formats_percent_signs(app):
    from flask import render_template_string

    with app.test_request_context():
        out = render_template_string("{{ _('%(name)s miles', name='<b>') }}|{{ _('100%% sure') }}")
    assert out == "&lt;b&gt; miles|100% sure"
