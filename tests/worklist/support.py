"""Helpers for the social-work queue tests: clinician contexts at given sites of given EHRs, referrals made
through the consent page, social workers with given PractitionerRoles."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from config.current import replace_settings
from sandbox_ehr.harness.launches import EHR1 as EHR1
from sandbox_ehr.harness.launches import EHR2 as EHR2
from sandbox_ehr.harness.launches import SNOMED_SW as SNOMED_SW
from sandbox_ehr.harness.launches import default_context
from sandbox_ehr.harness.launches import role as role
from sandbox_ehr.harness.launches import worker_context as worker_context
from smart_app.store.db import session_scope
from smart_app.store.models import ReferralRecord
from tests.writeback.support import SCREENING, consent

SITES = {
    "bwh": ("loc-bwh", "Brigham and Women's Hospital", "org-bwh", "Brigham and Women's Hospital"),
    "mgh": ("loc-mgh", "Massachusetts General Hospital", "org-mgh", "Massachusetts General Hospital"),
    "mgh-chelsea": ("loc-mgh-chelsea", "MGH Chelsea HealthCare Center", "org-mgh-chelsea", "MGH Chelsea"),
}
PROGRAM = {"bwh": ("passageway", "Passageway at BWH"), "mgh": ("haven", "HAVEN at MGH"),
           "mgh-chelsea": ("haven", "HAVEN at MGH")}


def clinician_context(site: str, patient: str, name: str, *, encounter: str | None = None,
                      interpreter: bool | None = None, language: str = "en") -> dict[str, Any]:
    loc, loc_name, org, org_name = SITES[site]
    ctx = default_context()
    ctx["patient"] = {**ctx["patient"], "id": patient, "name": name, "mrn": f"MRN-{patient}",
                      "language": language, "languages": [language], "interpreter_needed": interpreter}
    ctx["encounter"] = {"id": encounter or f"enc-{patient}", "class": "AMB", "start": "2026-11-29T14:30:00Z",
                        "interpreter_needed": None,
                        "locations": [{"id": loc, "name": loc_name, "postalCode": "02114",
                                       "identifiers": [{"system": "urn:ipv-sandbox:site", "value": site}]}],
                        "service_provider": {"id": org, "name": org_name, "identifiers": []}}
    ctx["user"] = {"reference": "Practitioner/doc", "name": "Dr. Avery Testdoctor", "roles": ["clinician"]}
    return ctx


def referral_data(site: str, *, danger: bool = False, channel: str = "phone") -> dict[str, Any]:
    service, program = PROGRAM[site]
    return {"screening": {**SCREENING, "danger": danger},
            "referral": {"site": None, "results": [{"service_id": service, "program": program,
                                                    "phone": "1-617-000-0000"}],
                         "selected": [service], "safe_contact": {"channel": channel, "note": None}}}


def make_referral(app, make_launch, site: str, patient: str, name: str, *, iss: str = EHR1, danger: bool = False,
                  channel: str = "phone", encounter: str | None = None, **ctx: Any) -> str:
    client = app.test_client()
    lid = make_launch(client, context=clinician_context(site, patient, name, encounter=encounter, **ctx),
                      data=referral_data(site, danger=danger, channel=channel), iss=iss)
    resp = consent(client, lid, channel=channel, resources=["ServiceRequest", "Task"])
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    with app.app_context(), session_scope(app) as db:
        return db.scalar(select(ReferralRecord.id).where(ReferralRecord.launch_id == lid))


def with_deployment(app, **blocks: Any) -> None:
    """Replace blocks of the deployment file (roles, worklist) for this app."""
    replace_settings(app, **blocks)
