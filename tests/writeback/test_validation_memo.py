"""Planned resources are validated once per referral and exact content: the consent page's repeat asks skip
pydantic, but any change of content (or another launch's referral) is validated again."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

import fhir.builders as builders
from config.ehr_profile import EhrProfile
from fhir.builders import WritebackInput, plan_writeback
from smart_app.writeback.note import with_note
from tests.writeback.support import REFERRAL, SCREENING

RESOURCES = ["Observation", "ServiceRequest", "DocumentReference"]


def _inp(key: str, now: datetime, **changes) -> WritebackInput:
    fields = {"referral_key": key, "patient_id": "pat-1", "encounter_id": "enc-1",
              "author_reference": "Practitioner/doc-1", "author_name": "Dr One", "screening": dict(SCREENING),
              "referral": dict(REFERRAL), "resources": list(RESOURCES), "now": now}
    fields.update(changes)
    return with_note(WritebackInput(**fields))


@pytest.fixture
def validations(monkeypatch):
    """Kinds of the resources that reached the FHIR models (the cache empty at the start)."""
    seen: list[str] = []
    real = builders.validate
    monkeypatch.setattr(builders, "_validated", type(builders._validated)())
    monkeypatch.setattr(builders, "validate", lambda r: (seen.append(r["resourceType"]), real(r))[1])
    return seen


def test_same_referral_and_content_validated_once_even_as_the_clock_moves(validations):
    profile = EhrProfile.load("sandbox").write_rules
    t0 = datetime(2026, 3, 1, 10, 0, 0, 123000, tzinfo=UTC)
    first = plan_writeback(_inp("ref-a", t0), profile)
    assert len(validations) == len(first) > 0
    later = plan_writeback(_inp("ref-a", t0 + timedelta(seconds=7, milliseconds=5)), profile)
    assert len(validations) == len(first)  # nothing validated again
    # ... and the plan is still the one made now (the cache holds no content, only "was valid").
    assert [p.resource for p in later] != [p.resource for p in first]
    assert [p.kind for p in later] == [p.kind for p in first]


def test_another_launch_referral_is_validated_again(validations):
    profile = EhrProfile.load("sandbox").write_rules
    now = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    n = len(plan_writeback(_inp("ref-a", now), profile))
    plan_writeback(_inp("ref-b", now), profile)
    assert len(validations) == 2 * n


def test_changed_content_is_validated_again_and_an_invalid_resource_still_fails(validations, monkeypatch):
    profile = EhrProfile.load("sandbox").write_rules
    now = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    n = len(plan_writeback(_inp("ref-a", now), profile))
    plan_writeback(_inp("ref-a", now, author_name="Dr Two"), profile)
    assert len(validations) > n  # the author's name changed resources: they were validated again

    real = builders.build_observation

    def broken(inp, prof, wanted):
        resource, deps = real(inp, prof, wanted)
        resource["effectiveDateTime"] = "not a date"
        return resource, deps

    monkeypatch.setattr(builders, "build_observation", broken)
    with pytest.raises(ValueError):
        plan_writeback(_inp("ref-a", now), profile)  # same referral, content now invalid: never served from the cache
    with pytest.raises(ValueError):
        plan_writeback(_inp("ref-a", now), profile)  # and an invalid resource is never remembered
