"""Malformed Questionnaire files are refused with the file name and the problem, at load and at app start-up."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fhir.questionnaires import DEFAULT_DIR, InstrumentError, load_instrument, load_instruments
from smart_app import create_app
from tests.conftest import app_config

HITS = json.loads((DEFAULT_DIR / "hits.json").read_text(encoding="utf-8"))


def site_file(tmp_path: Path, mutate, name: str = "site-tool.json") -> Path:
    raw = copy.deepcopy(HITS)
    raw["id"] = "site-tool"
    raw["url"] = "http://example.org/fhir/site/Questionnaire/site-tool"
    mutate(raw)
    path = tmp_path / name
    path.write_text(json.dumps(raw), encoding="utf-8")
    return path


def first_question(raw):
    return next(i for i in raw["item"] if i["type"] == "choice")


def drop_link_id(raw):
    del first_question(raw)["linkId"]


def bad_answer_score(raw):
    first_question(raw)["answerOption"][0]["extension"] = [
        {"url": "http://hl7.org/fhir/StructureDefinition/ordinalValue", "valueString": "one"}]


def missing_answer_score(raw):
    first_question(raw)["answerOption"][0]["extension"] = []


def unknown_type(raw):
    first_question(raw)["type"] = "telepathy"


def unsupported_type(raw):
    first_question(raw)["type"] = "string"


def no_citation(raw):
    raw["extension"] = [e for e in raw["extension"] if not e["url"].endswith("/source")]


def no_rule(raw):
    raw["extension"] = [e for e in raw["extension"] if not e["url"].endswith("/scoring-rule")]


def duplicate_link_id(raw):
    questions = [i for i in raw["item"] if i["type"] == "choice"]
    questions[1]["linkId"] = questions[0]["linkId"]


def answer_without_code(raw):
    del first_question(raw)["answerOption"][1]["valueCoding"]["code"]


def always_high_but_not_a_danger_item(raw):
    first_question(raw).setdefault("extension", []).append(
        {"url": "http://example.org/fhir/ipv-screen/StructureDefinition/always-high", "valueBoolean": True})


@pytest.mark.parametrize(("mutate", "problem"), [
    (drop_link_id, "linkId"),
    (bad_answer_score, "ordinal"),
    (missing_answer_score, "no ordinal score"),
    (unknown_type, "type 'telepathy' not supported"),
    (unsupported_type, "type 'string' not supported"),
    (no_citation, "no source citation"),
    (no_rule, "no scoring rule"),
    (duplicate_link_id, "duplicate linkId"),
    (answer_without_code, "needs valueCoding with system, code and display"),
    (always_high_but_not_a_danger_item, "flagged always-high but not danger-item"),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_malformed_file_is_refused_naming_file_and_problem(tmp_path, mutate, problem):
    path = site_file(tmp_path, mutate)
    with pytest.raises(InstrumentError) as err:
        load_instrument(path)
    assert str(path) in str(err.value)
    assert problem in str(err.value)


def test_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('{"resourceType": "Questionnaire",\n  "id": }', encoding="utf-8")
    with pytest.raises(InstrumentError, match=r"broken\.json: not valid JSON \(line 2"):
        load_instrument(path)


def test_a_site_file_reusing_a_bundled_id_is_refused(tmp_path):
    site_file(tmp_path, lambda raw: raw.update(id="hits"))
    with pytest.raises(InstrumentError, match="already defined"):
        load_instruments([DEFAULT_DIR, tmp_path])


def test_create_app_refuses_a_malformed_site_file(tmp_path):
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    path = site_file(site_dir, drop_link_id)
    with pytest.raises(InstrumentError) as err:
        create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}", INSTRUMENT_DIRS=[str(site_dir)]))
    assert str(path) in str(err.value)


def test_bundled_instruments_are_valid_fhir_r4_questionnaires():
    # The app's start-up skips this validation for the bundled files (issue 14: 0.22 s of create_app): here it is.
    instruments = load_instruments([DEFAULT_DIR], validate_bundled=True)
    assert {"hits", "hark", "pvs", "wast-short", "e-hits", "da-5"} <= set(instruments)


def test_create_app_refuses_a_site_file_that_is_not_valid_fhir(tmp_path):
    # Only the FHIR R4 model catches this one (our own checks do not read the date): site files are validated.
    site_dir = tmp_path / "site"
    site_dir.mkdir()
    path = site_file(site_dir, lambda raw: raw.update(date="last Tuesday"))
    load_instrument(path, fhir_validate=False)
    with pytest.raises(InstrumentError, match="not a valid FHIR R4 Questionnaire") as err:
        create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}", INSTRUMENT_DIRS=[str(site_dir)]))
    assert str(path) in str(err.value)


def test_create_app_refuses_an_unknown_default_instrument(tmp_path):
    from smart_app.screening.views import ScreeningConfigError

    with pytest.raises(ScreeningConfigError, match="default_instrument.*'nope' not found"):
        create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}", DEFAULT_INSTRUMENT="nope"))


def test_create_app_refuses_an_unknown_offered_instrument_and_a_screen_as_danger_check(tmp_path):
    from smart_app.screening.views import ScreeningConfigError

    with pytest.raises(ScreeningConfigError, match="offered instrument 'nope'"):
        create_app(app_config(f"sqlite:///{tmp_path / 'a.db'}", OFFERED_INSTRUMENTS=["hits", "nope"]))
    with pytest.raises(ScreeningConfigError, match="'hark' is not a Questionnaire with instrument-role danger-check"):
        create_app(app_config(f"sqlite:///{tmp_path / 'b.db'}", DANGER_CHECK="hark"))


def test_a_site_instrument_is_offered_and_rendered_without_code_changes(tmp_path, make_launch):
    site_dir = tmp_path / "site"
    site_dir.mkdir()

    def retitle(raw):
        raw["title"] = "Site relationship check"
        raw.pop("_title")

    site_file(site_dir, retitle)
    app = create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}", INSTRUMENT_DIRS=[str(site_dir)],
                                OFFERED_INSTRUMENTS=["hits", "site-tool"], DEFAULT_INSTRUMENT="site-tool"))
    try:
        client = app.test_client()
        from tests.conftest import launch_for

        lid = launch_for(app, client, data={"gate": {"status": "confirmed"}})
        page = client.get(f"/l/{lid}/screen").get_data(as_text=True)
        assert "Site relationship check" in page and 'name="q-hurt"' in page
        r = client.post(f"/l/{lid}/screen", data={"instrument": "site-tool", "q-hurt": "LA6482-9",
                                                  "q-insult": "LA6482-9", "q-threaten": "LA6270-8",
                                                  "q-scream": "LA6270-8"})
        assert r.status_code == 302
    finally:
        app.extensions["db_engine"].dispose()
