"""The language registry (config/languages.yaml): every registered patient language has what a language needs —
its catalogue, glossary, content and directory texts, instrument translations, each with its review status — and
a malformed registry stops start-up naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from babel import Locale

from config import languages as registry
from config.files import SettingsError

pytestmark = pytest.mark.i18n

ROOT = Path(__file__).resolve().parents[1]
TRANSLATIONS = ROOT / "smart_app" / "translations"
DIRECTORY = ROOT / "config" / "directory"


def test_english_is_the_source_and_comes_first():
    first = registry.languages()[0]
    assert first.code == "en" and first.source and first.validated
    assert "en" not in registry.translated_codes()
    assert set(registry.clinician_codes()) >= {"en", "es", "pt"}


@pytest.mark.parametrize("code", registry.translated_codes())
def test_a_registered_language_has_everything_a_language_needs(code):
    lang = registry.language(code)
    po = TRANSLATIONS / lang.locale / "LC_MESSAGES" / "messages.po"
    assert po.is_file() and po.with_suffix(".mo").is_file()
    glossary = yaml.safe_load((TRANSLATIONS / f"glossary-{code}.yaml").read_text(encoding="utf-8"))
    assert glossary["language"] == code and glossary["terms"] and glossary["quotes"]["never"]
    for name in ("content.yaml", "boston.yaml"):
        data = yaml.safe_load((DIRECTORY / name).read_text(encoding="utf-8"))
        assert registry.REVIEW.match(data["translations"][code]["review"]), name
    # The writing direction the pages give it is the one CLDR gives the language.
    assert lang.dir == Locale.parse(lang.locale).text_direction
    from fhir.questionnaires import load_instruments

    for key, inst in load_instruments().items():  # every bundled instrument has a version, with its review line
        assert inst.has_version(code), key
        assert registry.REVIEW.match(inst.translation_status[code]["review"]), key


def test_a_language_noted_as_next_is_not_offered():
    reg = registry.load_registry()
    assert "kea" in reg.next and "interpreter" in reg.next["kea"].why
    assert "kea" not in registry.codes() and not (TRANSLATIONS / "kea").exists()


@pytest.mark.parametrize(("tag", "found"), [("es-MX", "es"), ("ES", "es"), ("pt_BR", "pt"), ("en-US", "en"),
                                            ("kea", None), ("", None), (None, None)])
def test_a_patient_communication_tag_finds_its_language(tag, found):
    assert registry.match(tag) == found


def test_matches_name_other_tags_for_a_language(tmp_path):
    path = tmp_path / "languages.yaml"
    path.write_text(
        "format: ipv-languages/1\nlanguages:\n  en: {name: English, source: true, clinician: true}\n"
        "  zh-Hant: {name: 中文（繁體）, review: machine-drafted, matches: [zh-TW, zh-HK]}\n",
        encoding="utf-8",
    )
    reg = registry.load_registry(path)
    assert reg.languages["zh-Hant"].locale == "zh_Hant" and reg.languages["zh-Hant"].matches == ("zh-TW", "zh-HK")


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("  es: {name: Español, review: checked}\n", "review must be"),
        ("  es: {name: Español, review: machine-drafted, dir: upward}\n", "dir"),
        ("  es: {name: Español, review: machine-drafted, colour: red}\n", "colour"),
        ("  Spanish: {name: Español, review: machine-drafted}\n", "not a BCP 47 language tag"),
    ],
)
def test_a_malformed_registry_is_refused_naming_the_file(tmp_path, body, problem):
    path = tmp_path / "languages.yaml"
    path.write_text("format: ipv-languages/1\nlanguages:\n  en: {name: English, source: true}\n" + body,
                    encoding="utf-8")
    with pytest.raises(SettingsError) as err:
        registry.load_registry(path)
    assert str(path) in str(err.value) and problem in str(err.value)


@pytest.mark.parametrize("code", [c for c in registry.translated_codes() if not registry.language(c).clinician])
def test_a_patient_only_language_cannot_be_the_clinicians(tmp_path, code):
    """Its clinician side is not translated: start-up refuses it as clinician_language, naming the file."""
    from config.settings import load_settings
    from tests.test_settings import write_deployment

    path = write_deployment(tmp_path / "site.yaml", clinician_language=code)
    with pytest.raises(SettingsError) as err:
        load_settings({"IPV_DEPLOYMENT": str(path)})
    assert "clinician_language" in str(err.value) and str(path) in str(err.value)
    for ok in registry.clinician_codes():
        assert load_settings({"IPV_DEPLOYMENT": str(write_deployment(tmp_path / f"{ok}.yaml",
                                                                     clinician_language=ok))}).clinician_language == ok
