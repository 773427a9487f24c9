"""Every supported source loads into the same model; bad files are refused with file, row/path and reason."""

from __future__ import annotations

import json
import re

import pytest

from referrals.errors import DirectoryError
from referrals.loaders import load_source
from referrals.store import DEFAULT_DIRECTORY, DirectoryStore
from tests.referrals import samples

# The seed resource page every directory fact is traced to (a copy is kept beside the directory).
SEED = DEFAULT_DIRECTORY.parent / "seed" / "000_6db9ba04400aca15.txt"


def test_default_directory_loads_with_every_seed_program():
    d = load_source(DEFAULT_DIRECTORY)
    ids = {s.id for s in d.services}
    assert ids == {"emergency-911", "ma-safelink", "national-dv-hotline", "barcc", "passageway", "haven"}
    by = d.by_id()
    assert {t.id for t in by["passageway"].sites} == {
        "passageway-bwh", "passageway-faulkner", "passageway-sjphc", "passageway-brookside", "passageway-whittier",
        "passageway-mission-hill"}
    assert {t.id for t in by["haven"].sites} == {"haven-mgh", "haven-chelsea", "haven-revere"}
    assert by["passageway"].after_hours_phone().dial() == "1-617-732-5520 ext. 31808"
    assert by["haven"].after_hours_phone().dial() == "1-617-726-2241"
    # Every street address we added is flagged for the deploying site to confirm.
    for s in d.services:
        for t in s.sites:
            if t.address and t.address.line:
                assert t.address.confirm, t.id


def test_every_phone_number_in_the_directory_is_on_the_seed_page():
    seed = SEED.read_text()
    d = load_source(DEFAULT_DIRECTORY)
    for s in d.services:
        for p in s.phones:
            if p.channel != "chat":
                assert p.number in seed, (s.id, p.number)
            if p.ext:
                assert f"ext. {p.ext}" in seed
        quote = s.source.get("quote", "")
        for part in re.split(r"\s*\.\.\.\s*", quote):
            assert " ".join(part.split()) in " ".join(seed.split()), (s.id, part)


def test_hsds_json_loads_with_needs_languages_hours_and_hidden_shelter_address(tmp_path):
    d = load_source(samples.write_hsds_json(tmp_path / "dir.json"))
    by = d.by_id()
    counsel = by["svc-chelsea-counsel"]
    assert {"counselling", "legal"} <= counsel.needs
    assert counsel.languages == {"es", "en"}
    assert counsel.hours.known and not counsel.hours.always
    assert counsel.after_hours_phone().number == "617-555-0199"
    assert counsel.sites[0].lat == pytest.approx(42.3918)
    shelter = by["svc-safe-house"]
    assert shelter.hours.always
    assert shelter.hides_address
    assert shelter.sites[0].address.line is None  # the street never even enters the model


def test_hsds_paged_api_shape(tmp_path):
    p = tmp_path / "page.json"
    p.write_text(json.dumps({"total_items": 2, "contents": samples.hsds_services()}))
    assert len(load_source(p).services) == 2


def test_hsds_datapackage_loads(tmp_path):
    d = load_source(samples.write_datapackage(tmp_path / "pkg"))
    s = d.by_id()["svc-chelsea-counsel"]
    assert s.program == "Chelsea Family Center"
    assert s.languages == {"es"} and "counselling" in s.needs
    assert s.sites[0].address.postal_code == "02150"
    assert s.main_phone().number == "617-555-0100"
    # A folder works as well as the datapackage.json path.
    assert load_source(tmp_path / "pkg").by_id().keys() == d.by_id().keys()


def test_fhir_bundle_loads(tmp_path):
    d = load_source(samples.write_fhir(tmp_path / "bundle.json"))
    s = d.by_id()["hs-rev"]
    assert s.program == "Revere Community Services"
    assert {"advocacy", "support-groups", "legal"} <= s.needs
    assert s.languages == {"pt"}
    assert "Organization/org-rev" in s.serves.organizations
    assert "urn:ipv-sandbox:site|rcs" in s.sites[0].match.identifiers
    assert s.hours.weekly[0].opens == 600


def _issues(exc: pytest.ExceptionInfo) -> list[str]:
    return [str(i) for i in exc.value.issues]


def test_native_errors_name_the_path(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("format: ipv-directory/1\nservices:\n  - id: x\n    program: X\n    name: X\n"
                 "    phones: [{number: 'call me'}]\n    needs: [flying]\n")
    with pytest.raises(DirectoryError) as exc:
        load_source(p)
    text = "\n".join(_issues(exc))
    assert f"{p}: services[0].phones[0].number: not a phone number" in text
    assert "services[0].needs" in text


def test_native_yaml_syntax_error_names_the_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("format: ipv-directory/1\nservices: [\n")
    with pytest.raises(DirectoryError) as exc:
        load_source(p)
    assert re.search(r"line \d+, column \d+: not valid YAML", _issues(exc)[0])


def test_hsds_json_errors_name_the_json_path(tmp_path):
    services = samples.hsds_services()
    services[1]["phones"][0]["number"] = "nope"
    services[0]["service_at_locations"][0]["location"]["latitude"] = 123
    with pytest.raises(DirectoryError) as exc:
        load_source(samples.write_hsds_json(tmp_path / "d.json", services))
    text = "\n".join(_issues(exc))
    assert "$[1].phones[0].number: not a phone number" in text
    assert "$[0].service_at_locations[0].location.latitude: out of range" in text


def test_hsds_csv_errors_name_file_row_and_column(tmp_path):
    tables = {k: [dict(r) for r in v] for k, v in samples.TABLES.items()}
    tables["phones"][0]["number"] = "n/a"
    tables["schedules"][0]["opens_at"] = "9am"
    tables["service_at_locations"][0]["location_id"] = "loc-missing"
    with pytest.raises(DirectoryError) as exc:
        load_source(samples.write_datapackage(tmp_path / "pkg", tables))
    text = "\n".join(_issues(exc))
    assert "phones.csv row 2, column number: not a phone number" in text
    assert "schedules.csv row 2: time '9am' is not HH:MM" in text
    assert "service_at_locations.csv row 2, column location_id: no location with id 'loc-missing'" in text


def test_datapackage_missing_file_is_refused(tmp_path):
    pkg = samples.write_datapackage(tmp_path / "pkg")
    (tmp_path / "pkg" / "phones.csv").unlink()
    with pytest.raises(DirectoryError) as exc:
        load_source(pkg)
    assert "file not found: phones.csv" in "\n".join(_issues(exc))


def test_fhir_errors_name_the_entry(tmp_path):
    bundle = samples.fhir_bundle()
    bundle["entry"][2]["resource"]["telecom"][0]["value"] = "x"
    bundle["entry"][2]["resource"]["location"].append({"reference": "Location/nowhere"})
    with pytest.raises(DirectoryError) as exc:
        load_source(samples.write_fhir(tmp_path / "b.json", bundle))
    text = "\n".join(_issues(exc))
    assert "entry[2].resource.telecom[0].value: not a phone number" in text
    assert "entry[2].resource.location[1]: reference to a Location not in the bundle" in text


def test_not_a_bundle_is_refused(tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps({"resourceType": "Patient", "id": "x"}))
    with pytest.raises(DirectoryError, match="must be a FHIR Bundle"):
        load_source(p)


def test_failed_reload_keeps_the_old_directory(tmp_path):
    good = samples.write_hsds_json(tmp_path / "good.json")
    store = DirectoryStore([good])
    before = store.index
    bad = tmp_path / "bad.json"
    bad.write_text("[{\"id\": \"only-an-id\"}]")
    with pytest.raises(DirectoryError):
        store.reload([good, bad])
    assert store.index is before
    assert store.paths == [good]
    assert {e.service.id for e in store.index.entries} == {"svc-chelsea-counsel", "svc-safe-house"}


def test_hsds_closed_services_are_not_listed(tmp_path):
    services = samples.hsds_services()
    services[0]["status"] = "temporarily closed"
    services[1]["status"] = "defunct"
    services.append(dict(samples.hsds_services()[0], id="svc-other", status="active"))
    d = load_source(samples.write_hsds_json(tmp_path / "d.json", services))
    assert [s.id for s in d.services] == ["svc-other"]


def test_protective_order_text_and_checklist_sources_are_on_the_seed_page():
    from referrals.content import load_content

    seed = " ".join(SEED.read_text().split())
    content = load_content()
    po = content["protective_orders"]
    english = [p["en"] for p in po["intro"]] + [p["en"] for p in po["how"]] + [p["en"] for p in po["eligible"]]
    english += [p["en"] for p in po["types"]] + [po["eligible_intro"]["en"]]
    for text in english:
        assert " ".join(text.split()) in seed, text
    ideas = content["safety_ideas"]
    assert ideas["title"]["en"] == "Safety planning ideas"  # not the page's own "checklist" title
    for item in ideas["items"]:
        for part in re.split(r"\s*\.\.\.\s*", item["from"]):
            assert " ".join(part.split()) in seed, item["id"]
    # Advice the page does not give is not among the ideas.
    assert {i["id"] for i in ideas["items"]}.isdisjoint({"save-hotline", "safe-device", "children"})
    assert ideas["page_checklist"]["from"] in seed


def test_every_offer_bullet_of_every_program_is_on_the_seed_page():
    """What a program offers is shown as its own bullets: each must be one of its bullets on the page
    (no SafeLink 209A bullet the page does not give it)."""
    seed = " ".join(SEED.read_text().replace("( between", "between").split())
    d = load_source(DEFAULT_DIRECTORY)
    for s in d.services:
        for offer in s.offers:
            assert " ".join(offer["en"].split()) in seed, (s.id, offer["en"])
    safelink = d.by_id()["ma-safelink"]
    assert len(safelink.offers) == 4 and not any("209A" in o["en"] for o in safelink.offers)


def test_haven_is_tagged_for_court_accompaniment_not_legal_help():
    d = load_source(DEFAULT_DIRECTORY)
    haven = d.by_id()["haven"]
    assert "court-accompaniment" in haven.needs and "legal" not in haven.needs
    assert any("accompaniment to court" in o["en"] for o in haven.offers)
