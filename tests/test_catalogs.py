"""Every patient language of the registry (config/languages.yaml): each catalog is complete for what the patient
hears or takes home, and every text follows its glossary (smart_app/translations/glossary-<lang>.yaml)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po

from config.languages import codes, language, translated_codes

ROOT = Path(__file__).resolve().parents[1]
TRANSLATIONS = ROOT / "smart_app" / "translations"
LANGS = translated_codes()
# "el/la", "defensor/a", "segura(o)", "parceiro(a)"; not "24/7"
SLASH_FORM = re.compile(r"(?<![\w/])[^\W\d]+/[^\W\d]{1,3}(?![\w/])|[^\W\d]\((?:a|o|as|os)\)")


def po_path(lang: str) -> Path:
    return TRANSLATIONS / language(lang).locale / "LC_MESSAGES" / "messages.po"


def catalog(lang: str):
    with po_path(lang).open("rb") as f:
        return read_po(f, locale=language(lang).locale)


def glossary(lang: str) -> dict[str, Any]:
    return yaml.safe_load((TRANSLATIONS / f"glossary-{lang}.yaml").read_text(encoding="utf-8"))


def extract(tmp_path: Path, cfg_text: str, *keywords: str, default_keywords: bool = True) -> set[str]:
    cfg = tmp_path / "babel.cfg"
    cfg.write_text(cfg_text)
    pot = tmp_path / "messages.pot"
    args = [sys.executable, "-m", "babel.messages.frontend", "extract", "-F", str(cfg), "-o", str(pot), "--no-location"]
    for k in keywords:
        args += ["-k", k]
    if not default_keywords:
        args.append("--no-default-keywords")
    subprocess.run([*args, "."], check=True, cwd=ROOT, capture_output=True)
    with pot.open("rb") as f:
        return {m.id for m in read_po(f) if m.id}


def patient_facing_msgids(tmp_path: Path) -> set[str]:
    """Words said to the patient (``p_`` in templates and code). The printed handout's words come from
    config/directory/content.yaml (checked below); its ``_()`` strings are the clinician's controls (print, layout,
    QR), in the clinician's language like every other control."""
    from smart_app.screening.education import NOT_ALONE, SCRIPT

    said = extract(tmp_path, "[python: smart_app/**.py]\n[jinja2: smart_app/**/templates/**.html]\n", "p_",
                   default_keywords=False)
    assert len(said) >= 10
    return said | set(SCRIPT) | {NOT_ALONE}  # the universal-education script, read aloud (marked N_ there)


def texts_in(value: Any, lang: str, path: str = "") -> list[tuple[str, str | None]]:
    """(where, text in ``lang``) for every {en: ...} mapping in a content/directory file."""
    out: list[tuple[str, str | None]] = []
    if isinstance(value, dict):
        if isinstance(value.get("en"), str):
            out.append((path, value.get(lang)))
        for k, v in value.items():
            if k not in (*codes(), "from", "source", "quote"):
                out += texts_in(v, lang, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += texts_in(v, lang, f"{path}[{i}]")
    return out


def instrument_texts(lang: str) -> list[tuple[str, str | None]]:
    from fhir.questionnaires import load_instruments

    out = []
    for key, inst in load_instruments().items():
        out.append((f"{key}.title", inst.title.get(lang)))
        for item in inst.items:
            out.append((f"{key}.{item.link_id}", item.text.get(lang)))
            out += [(f"{key}.{item.link_id}.{a.code}", a.display.get(lang)) for a in item.answers]
    return out


CONTENT = yaml.safe_load((ROOT / "config" / "directory" / "content.yaml").read_text(encoding="utf-8"))
DIRECTORY = yaml.safe_load((ROOT / "config" / "directory" / "boston.yaml").read_text(encoding="utf-8"))


@pytest.mark.parametrize("lang", LANGS)
def test_catalog_is_complete_for_everything_said_to_or_printed_for_the_patient(tmp_path, lang):
    wanted = patient_facing_msgids(tmp_path)
    translated = {m.id for m in catalog(lang) if m.id and m.string and "fuzzy" not in m.flags}
    assert sorted(wanted - translated) == []


@pytest.mark.parametrize("lang", LANGS)
def test_content_handout_and_instruments_are_translated_and_marked_as_ours(lang):
    missing = [where for where, text in texts_in(CONTENT, lang) if not text]
    assert missing == []
    assert CONTENT["translations"][lang]["confirm"] is True
    for service in DIRECTORY["services"]:
        assert service["discreet_name"].get(lang), service["id"]  # the handout's names
    assert [where for where, text in instrument_texts(lang) if not text] == []
    from fhir.questionnaires import load_instruments

    for key, inst in load_instruments().items():
        status = inst.translation_status[lang]
        assert status["status"] == "unconfirmed" and "not a validated version" in status["note"], key


@pytest.mark.parametrize("lang", LANGS)
def test_every_text_follows_the_glossary(lang):
    terms = glossary(lang)["terms"]
    assert {"court", "holidays", "referral", "advocate", "pager"} <= set(terms)
    texts = [(m.id, m.string) for m in catalog(lang) if m.id and isinstance(m.string, str) and m.string]
    texts += [(w, t) for w, t in texts_in(CONTENT, lang) + texts_in(DIRECTORY, lang) + instrument_texts(lang) if t]
    assert len(texts) > 40
    for concept, rule in terms.items():
        for word in rule["never"]:
            pattern = re.compile(rf"(?<!\w){re.escape(word)}(?!\w)", re.I)
            bad = [(where, text) for where, text in texts if pattern.search(text)]
            assert bad == [], f"{lang}: use {rule['use']!r} for {concept}, not {word!r}: {bad[:3]}"


@pytest.mark.parametrize("lang", LANGS)
def test_patient_facing_texts_have_no_slash_forms(tmp_path, lang):
    cat = {m.id: m.string for m in catalog(lang) if m.id}
    texts = [(i, cat.get(i) or "") for i in patient_facing_msgids(tmp_path)]
    texts += [(w, t or "") for w, t in texts_in(CONTENT, lang) + instrument_texts(lang)]
    if language(lang).clinician:  # a bilingual clinician may read any of the catalogue to the patient
        texts += list(cat.items())
    bad = [(w, t) for w, t in texts if isinstance(t, str) and SLASH_FORM.search(t)]
    assert bad == []


def _translated(value: Any) -> bool:
    """A message string (or every form of a plural's) is there."""
    return all(value) if isinstance(value, list | tuple) else bool(value)


def _plain(value: Any) -> Any:
    """A message id or string as a dict key and comparable value: a plural's forms (a list in the .mo) as a tuple."""
    return tuple(value) if isinstance(value, list | tuple) else value


@pytest.mark.parametrize("lang", LANGS)
def test_committed_mo_matches_the_po(lang):
    with po_path(lang).with_suffix(".mo").open("rb") as f:
        mo = {_plain(m.id): _plain(m.string) for m in read_mo(f) if m.id}
    po = {_plain(m.id): _plain(m.string) for m in catalog(lang) if m.id and _translated(m.string)
          and "fuzzy" not in m.flags}
    # An untranslated plural (a patient-only catalogue leaves the clinician's empty) is compiled as the English.
    fallback = {k: v for k, v in mo.items() if k not in po}
    assert {k: mo.get(k) for k in po} == po
    assert all(isinstance(k, tuple) and set(v) <= set(k) for k, v in fallback.items()), sorted(fallback)[:3]
