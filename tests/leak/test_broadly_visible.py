"""What copies forward or many people see (a problem list entry or the visit's diagnosis, the score row) is written
only where the deployment turns it on: the consent page neither offers nor plans it by default, a posted tick for it
writes nothing, and check-config warns while one is on."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from config.checks import check_config
from config.current import replace_settings, settings_of
from smart_app.store.crypto import decrypt_json
from smart_app.store.db import session_scope
from smart_app.store.models import OutboxItem
from tests.writeback.support import REFERRAL, SCREENING, consent

pytestmark = pytest.mark.leak

DATA = {"screening": dict(SCREENING), "referral": REFERRAL}
DOWN_ISS = "http://127.0.0.1:9/fhir"  # nothing listens: the writes stay queued


def written(app) -> dict[str, dict]:
    with app.app_context(), session_scope(app) as db:
        return {r.kind: decrypt_json(r.resource_enc) for r in db.scalars(select(OutboxItem))}


def test_by_default_neither_the_score_nor_a_condition_is_offered_or_written(app, make_launch):
    replace_settings(app, BROADLY_VISIBLE={})
    client = app.test_client()
    lid = make_launch(client, data=DATA, iss=DOWN_ISS)
    page = client.get(f"/l/{lid}/consent").get_data(as_text=True)
    assert 'data-testid="res-ServiceRequest"' in page
    assert 'data-testid="res-Observation"' not in page and 'data-testid="res-Condition"' not in page
    # A form that ticks them anyway (an old page, a crafted POST) writes neither.
    consent(client, lid, channel="none", resources=["ServiceRequest", "Observation", "Condition"])
    assert sorted(written(app)) == ["DocumentReference", "ServiceRequest"]


@pytest.mark.parametrize("category", ["problem-list-item", "encounter-diagnosis"])
def test_a_deployment_that_turns_the_condition_on_names_it_on_the_consent_page(app, make_launch, category):
    scopes = settings_of(app).scopes_ehr + " patient/Condition.cs"  # the site asks for it with the switch
    replace_settings(app, BROADLY_VISIBLE={"condition": category}, SCOPES_EHR=scopes)
    client = app.test_client()
    lid = make_launch(client, data=DATA, iss=DOWN_ISS)
    page = client.get(f"/l/{lid}/consent").get_data(as_text=True)
    assert 'data-testid="res-Condition"' in page
    preview = client.post(f"/l/{lid}/consent/preview", data={"shown": "1", "channel": "none",
                                                              "resources": ["Condition"]}).get_json()
    assert "health problem on the chart" in " ".join(i["words"] for i in preview["items"])
    assert any("listed among your health problems" in line["text"] for line in preview["script"])
    consent(client, lid, channel="none", resources=["Condition"])
    condition = written(app)["Condition"]
    assert condition["category"][0]["coding"][0]["code"] == category
    assert {c["code"] for c in condition["meta"]["security"]} >= {"R", "SDV"}


def test_check_config_warns_while_a_broadly_visible_write_is_on(app):
    assert not [p for p in check_config(settings_of(app).replace(BROADLY_VISIBLE={})) if p.setting == "broadly_visible"]
    problems = [p for p in check_config(settings_of(app).replace(BROADLY_VISIBLE={"condition": "problem-list-item",
                                                                                  "score_observation": True}))
                if p.setting == "broadly_visible"]
    assert [p.level for p in problems] == ["warning", "warning"]
    assert "leak-check" in problems[0].message
    # An EHR that does not take the kind: said too, as nothing is written.
    epic = settings_of(app).replace(BROADLY_VISIBLE={"condition": "problem-list-item"}, EHR_PROFILE="epic",
                                    RESTRICTED_NOTE_TYPE="urn:x|SW-CONF|Confidential")
    assert any("nothing is written" in p.message for p in check_config(epic) if p.setting == "broadly_visible")
