"""The chart note's wording belongs to the write-back feature; the wire layer files exactly the text it is given."""

from __future__ import annotations

import base64

import pytest

from config.ehr_profile import EhrProfile
from fhir.builders import WritebackInput, plan_writeback, reference_code
from smart_app.writeback.note import note_text, with_note
from tests.writeback.support import REFERRAL, SCREENING


def _inp(**changes) -> WritebackInput:
    fields = {"referral_key": "ref-1", "patient_id": "pat-1", "encounter_id": "enc-1",
              "author_reference": "Practitioner/doc-1", "author_name": "Dr One", "screening": dict(SCREENING),
              "referral": dict(REFERRAL), "resources": ["DocumentReference"]}
    fields.update(changes)
    return WritebackInput(**fields)


def _filed(inp: WritebackInput) -> str:
    plans = plan_writeback(inp, EhrProfile.load("sandbox").write_rules)
    doc = next(p.resource for p in plans if p.kind == "DocumentReference")
    return base64.b64decode(doc["content"][0]["attachment"]["data"]).decode("utf-8")


def test_minimal_note_says_how_not_to_contact_and_carries_the_reference_code():
    text = note_text("ref-1", {}, {"channel": "none", "note": None})
    assert text.startswith("Confidential referral to support services")
    assert "Do not contact the patient" in text and "Documented at the patient's request" not in text
    assert text.endswith(f"Ref. {reference_code('ref-1')}")


def test_detail_only_when_given_and_the_contact_only_as_answered():
    text = note_text("ref-1", {}, {"channel": "phone", "note": "after 5pm"}, "As the patient asked.")
    assert "The patient says contact by phone is safe (after 5pm)." in text
    assert "Documented at the patient's request:\nAs the patient asked." in text
    assert "Safe contact: not answered yet." in note_text("ref-1", {}, {})


def test_the_chart_note_is_byte_for_byte_the_worded_text():
    inp = with_note(_inp(safe_contact={"channel": "text", "note": None}), "Bruise, 3 Jan.")
    assert _filed(inp) == note_text("ref-1", inp.referral, inp.safe_contact, "Bruise, 3 Jan.") == inp.note_text


def test_the_wire_layer_writes_no_note_of_its_own():
    with pytest.raises(ValueError, match="note text"):
        _filed(_inp())
