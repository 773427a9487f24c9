"""The typed launch context against the JSON stored with launch records: a record written before the context
was typed loads, reads by attribute, and is written back unchanged."""

from __future__ import annotations

import copy
import json

import pytest

from fhir.launch_context import LaunchContext, Reference

# A context as the launch stored it (the untyped reader's output, then the callback's smart_style), JSON-decoded.
STORED = json.loads("""{
 "patient": {"interpreter_needed": true, "id": "p1", "name": "Ana Lopez", "birthDate": "1988-02-03",
             "gender": "female", "language": "es", "languages": ["es", "en"], "mrn": "MRN-9"},
 "encounter": {"id": "e1", "class": "AMB", "start": "2026-01-05T09:30:00Z", "interpreter_needed": null,
               "locations": [{"id": "loc-bwh", "name": "Brigham and Women's Hospital",
                              "identifiers": [{"system": "urn:ipv-sandbox:site", "value": "bwh"}],
                              "postalCode": "02115"}],
               "service_provider": {"id": "org-bwh", "name": "Brigham and Women's Hospital", "identifiers": []},
               "parent_locations": [], "parent_organizations": []},
 "user": {"reference": "Practitioner/sw1", "name": "Ms. Devon Social", "roles": ["social_worker"],
          "practitioner_roles": [
            {"id": "r1", "active": true,
             "codings": [{"system": "http://snomed.info/sct", "code": "106328005", "display": null}],
             "texts": ["Medical social worker"],
             "locations": [{"reference": "Location/loc-mgh-chelsea", "display": null}],
             "organizations": [{"reference": "Organization/org-mgh", "display": "MGH"}],
             "services": [{"reference": "HealthcareService/hs-dv", "display": "DV advocacy, Chelsea"}]}]},
 "need_patient_banner": false,
 "smart_style_url": "https://ehr.example/s.json",
 "intent": "screening",
 "fhir_context": [{"reference": "Encounter/e1"}, {"canonical": "http://example.org/Questionnaire/x", "role": "r"}],
 "scope": "launch openid fhirUser patient/Encounter.rs",
 "smart_style": {"color_background": "#f6f7f9"}
}""")

# Older records: no HealthcareService roles, no interpreter or start, no style yet; a standalone launch.
OLDER = {"patient": {"id": "pat-test", "name": "Rosa Test", "birthDate": "1990-04-02", "gender": "female",
                     "language": "en", "languages": ["en"], "mrn": "TEST-1"},
         "encounter": {"id": "enc-test", "class": "AMB", "locations": [], "service_provider": None},
         "user": {"reference": "Practitioner/prac-test", "name": "Dr. Test Clinician", "roles": ["clinician"]},
         "need_patient_banner": True, "smart_style_url": None, "intent": None, "fhir_context": [], "scope": ""}
STANDALONE = {"patient": None, "encounter": None,
              "user": {"reference": "Practitioner/sw1", "name": "S W", "roles": ["social_worker"],
                       "practitioner_roles": []},
              "need_patient_banner": True, "smart_style_url": None, "intent": None, "fhir_context": [],
              "scope": "openid fhirUser"}


def test_a_stored_context_loads_typed_and_round_trips() -> None:
    ctx = LaunchContext.from_dict(copy.deepcopy(STORED))
    assert ctx.patient.language == "es" and ctx.patient.languages == ("es", "en")
    assert ctx.patient.birth_date == "1988-02-03" and ctx.patient.interpreter_needed is True
    assert ctx.encounter.class_code == "AMB" and ctx.encounter.start == "2026-01-05T09:30:00Z"
    assert ctx.locations[0].postal_code == "02115" and ctx.locations[0].identifiers[0].value == "bwh"
    assert ctx.organization.id == "org-bwh" and ctx.patient_id == "p1" and ctx.encounter_id == "e1"
    role = ctx.user.practitioner_roles[0]
    assert role.codings[0].code == "106328005" and role.texts == ("Medical social worker",)
    assert role.services == (Reference("HealthcareService/hs-dv", "DV advocacy, Chelsea"),)
    assert ctx.need_patient_banner is False and ctx.smart_style == {"color_background": "#f6f7f9"}
    assert ctx.to_dict() == STORED
    assert LaunchContext.from_dict(json.loads(json.dumps(ctx.to_dict()))) == ctx


@pytest.mark.parametrize("stored", [OLDER, STANDALONE], ids=["older", "standalone"])
def test_older_and_patientless_records_load_and_keep_their_shape(stored: dict) -> None:
    ctx = LaunchContext.from_dict(copy.deepcopy(stored))
    out = ctx.to_dict()
    # What the record held comes back as it was; a key added since reads as its default.
    for key, value in stored.items():
        if isinstance(value, dict):
            assert {k: out[key][k] for k in value} == value
        else:
            assert out[key] == value
    assert "smart_style" not in out and ctx.smart_style is None


def test_a_record_without_practitioner_roles_is_told_apart_from_one_with_none() -> None:
    """The role mapping keeps the launch's ``roles`` for records from before PractitionerRoles were kept."""
    assert LaunchContext.from_dict(OLDER).user.practitioner_roles is None
    assert "practitioner_roles" not in LaunchContext.from_dict(OLDER).to_dict()["user"]
    assert LaunchContext.from_dict(STANDALONE).user.practitioner_roles == ()


def test_an_empty_or_missing_context_reads_as_no_patient_no_visit_no_user() -> None:
    for raw in ({}, None):
        ctx = LaunchContext.from_dict(raw)
        assert ctx.patient is None and ctx.encounter is None and ctx.locations == () and ctx.organization is None
        assert ctx.user.reference is None and ctx.user.roles == () and ctx.need_patient_banner is True


def test_the_context_is_read_only_and_style_is_added_by_copy() -> None:
    ctx = LaunchContext.from_dict(OLDER)
    with pytest.raises(AttributeError):
        ctx.patient.name = "someone else"  # type: ignore[misc]
    styled = ctx.with_style({"color_text": "#111"})
    assert styled.smart_style == {"color_text": "#111"} and ctx.smart_style is None
    assert styled.to_dict()["smart_style"] == {"color_text": "#111"}
