"""A standalone launch by a social worker lands on the queue, even when the EHR honours launch/patient and hands
over a patient: the queue then offers that patient's referrals, never the screening gate. The shipped deployment
files do not ask for launch/patient in standalone."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
import requests
import yaml

from config.current import replace_settings, settings_of
from config.deployment import DEPLOYMENTS_DIR
from tests.launch.test_launch_sandbox import configure, launch_id, stored

pytestmark = pytest.mark.routing


@pytest.mark.parametrize("path", sorted(DEPLOYMENTS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_no_shipped_deployment_asks_for_a_patient_in_standalone(path):
    scopes = str((yaml.safe_load(path.read_text()) or {}).get("scopes_standalone") or "").split()
    assert "launch/patient" not in scopes


def test_a_social_worker_handed_a_patient_lands_on_the_queue_with_that_patients_referrals_offered(
        app, client, sandbox):
    configure(app, sandbox, "secret-basic")
    replace_settings(app, scopes_standalone="launch/patient " + settings_of(app).scopes_standalone)
    resp = client.get("/launch/standalone")
    login = requests.get(resp.headers["Location"], allow_redirects=False, timeout=10)
    pending = re.search(r'name="pending" value="([^"]+)"', login.text).group(1)
    back = requests.post(sandbox.url + "/auth/login", data={"pending": pending, "practitioner": "prac-devon",
                                                            "patient": "pat-alice", "action": "approve"},
                         allow_redirects=False, timeout=10)
    done = client.get("/callback?" + urlsplit(back.headers["Location"]).query)
    lid = launch_id(done)
    with app.app_context():
        assert stored(app, lid).context["patient"]["id"] == "pat-alice"  # the EHR did hand over a patient
    assert done.headers["Location"].endswith(f"/l/{lid}/worklist")
    page = client.get(f"/l/{lid}/worklist").get_data(as_text=True)
    assert 'data-testid="launch-patient-open"' in page
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    found = client.post(f"/l/{lid}/worklist/search", data={"csrf_token": token, "by": "launch-patient"})
    assert found.status_code == 302 and found.headers["Location"].endswith("patient=1")
    with app.app_context():
        assert stored(app, lid).data["worklist_search"]["mrn_key"] not in (None, "NONE")
