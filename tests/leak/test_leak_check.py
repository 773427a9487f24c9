"""flask leak-check against each sandbox EHR personality: the app's defaults leak nothing to the test patient's portal
or her proxy; a deployment set to write where the patient can read fails the check, naming what came back; the proxy
sees what the personality's rules say; a patient not marked as test data is refused before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from config.ehr_profile import PROFILES_DIR
from sandbox_ehr import authstore
from sandbox_ehr.harness.portal import TEST_ENCOUNTER, TEST_PATIENT, TEST_PROXY, portal_token
from sandbox_ehr.harness.vendor import GRANTED, PERSONALITIES, start

pytestmark = pytest.mark.leak

DEFAULTS = {"BROADLY_VISIBLE": {}}  # the model's defaults: nothing broadly visible turned on
# The test clinician's sign-in the site hands over for the writes: what each vendor grants the app (vendor.py), the
# generic EHR a user/ token (every kind the deployment could write, and the delete that cleans up).
WRITER_SCOPE = {**GRANTED, "generic": "launch user/*.cruds"}


@pytest.fixture
def env(request, tmp_path):
    personality, config = request.param if isinstance(request.param, tuple) else (request.param, {})
    environment = start(personality, tmp_path, **{**DEFAULTS, **config})
    yield environment
    environment.close()


def leak_check(env, tmp_path: Path, patient: str = TEST_PATIENT, proxy: str | None = f"RelatedPerson/{TEST_PROXY}",
               encounter: str | None = TEST_ENCOUNTER, clinician: bool = True) -> tuple[int, str]:
    """Run `flask leak-check` with the portal sign-ins a site would hand over (``proxy``: the proxy's user); without
    ``clinician`` the writes use the deployment's backend-services token. (exit code, output)."""
    files = {"patient_token_file": ("patient.json", f"Patient/{patient}")}
    if proxy:
        files["proxy_token_file"] = ("proxy.json", proxy)
    spec = {"iss": env.iss, "test_patient": {"id": patient, "encounter": encounter,
                                             "author": "Practitioner/prac-avery"}}
    if clinician:
        spec["clinician_token_file"] = "clinician.json"
    with env.sandbox.app_context():
        access = authstore.issue_access_token("ipv-screen-jwt", WRITER_SCOPE[env.personality], patient=patient,
                                              encounter=encounter, fhir_user="Practitioner/prac-avery")
    (tmp_path / "clinician.json").write_text(json.dumps({"access_token": access, "patient": patient}))
    for key, (name, user) in files.items():
        (tmp_path / name).write_text(json.dumps(portal_token(env.server.url, user)))
        spec[key] = name
    path = tmp_path / "leak-check.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = env.app.test_cli_runner().invoke(args=["leak-check", "--file", str(path)])
    return result.exit_code, result.output


def leaks(output: str, viewer: str) -> list[str]:
    return [line.split(": ", 1)[1].split(" ", 1)[0] for line in output.splitlines()
            if line.startswith(f"LEAK {viewer}:")]


@pytest.mark.parametrize("env", PERSONALITIES, indirect=True)
def test_the_apps_defaults_leak_nothing_to_the_patient_or_the_proxy(env, tmp_path):
    code, out = leak_check(env, tmp_path)
    assert code == 0, out
    assert "wrote DocumentReference/" in out  # the note was written: the pass is about something
    assert "passed: nothing of the test referral" in out and "patient and proxy" in out
    assert env.kept()["Observation"] == 0  # the score is not written by default, on any EHR
    if env.personality == "generic":  # the one EHR that allows a delete: nothing is left behind
        assert "left in the test patient's chart" not in out and env.documents(TEST_PATIENT) == []


@pytest.mark.parametrize("env", [("generic", {"BROADLY_VISIBLE": {"condition": category}})
                                 for category in ("problem-list-item", "encounter-diagnosis")], indirect=True)
def test_the_problem_list_or_diagnosis_switch_fails_the_check_naming_the_condition(env, tmp_path):
    code, out = leak_check(env, tmp_path)
    assert code == 1, out
    assert [r.split("/")[0] for r in leaks(out, "patient")] == ["Condition"]
    assert [r.split("/")[0] for r in leaks(out, "proxy")] == ["Condition"]
    assert "FAILED" in out


@pytest.mark.parametrize("env", ["generic"], indirect=True)
def test_an_ehr_that_drops_meta_security_fails_the_check_naming_what_relied_on_it(env, tmp_path):
    env.faults(drop_security_labels=True)  # meta.security lost on every stored write
    code, out = leak_check(env, tmp_path)
    assert code == 1, out
    for viewer in ("patient", "proxy"):
        kinds = {r.split("/")[0] for r in leaks(out, viewer)}
        # The order, the answers and the task had only meta.security; the note keeps its own securityLabel (NOPAT).
        assert {"ServiceRequest", "QuestionnaireResponse", "Task"} <= kinds, out
        assert "DocumentReference" not in kinds, out


ORDINARY_NOTE = {"epic": {"system": "http://loinc.org", "code": "11506-3", "display": "Progress note"},
                 "oracle": {"system": "http://loinc.org", "code": "57133-1", "display": "Referral note"}}


@pytest.mark.parametrize("env", [(name, {"RESTRICTED_NOTE_TYPE": note}) for name, note in ORDINARY_NOTE.items()],
                         indirect=True)
def test_a_note_type_the_portal_releases_fails_the_check_on_epic_and_oracle(env, tmp_path):
    code, out = leak_check(env, tmp_path)
    assert code == 1, out
    assert [r.split("/")[0] for r in leaks(out, "patient")] == ["DocumentReference"]
    assert [r.split("/")[0] for r in leaks(out, "proxy")] == ["DocumentReference"]
    assert "text: Ref. " in out  # the note's own words that came back are named


def profile_without_nopat(tmp_path: Path) -> str:
    profile = yaml.safe_load((PROFILES_DIR / "sandbox.yaml").read_text())
    profile["security"]["nopat"] = False
    path = tmp_path / "sandbox-no-nopat.yaml"
    path.write_text(yaml.safe_dump(profile))
    return str(path)


@pytest.fixture
def env_without_nopat(tmp_path):
    environment = start("generic", tmp_path, **DEFAULTS, EHR_PROFILE=profile_without_nopat(tmp_path))
    yield environment
    environment.close()


def test_without_nopat_the_patient_reads_the_note_and_the_proxy_does_not(env_without_nopat, tmp_path):
    # generic.yaml: R withholds from a proxy only; NOPAT from both. With R and SDV alone the patient reads it all.
    code, out = leak_check(env_without_nopat, tmp_path)
    assert code == 1, out
    assert {"DocumentReference", "ServiceRequest"} <= {r.split("/")[0] for r in leaks(out, "patient")}
    assert leaks(out, "proxy") == []


@pytest.mark.parametrize("env", ["generic"], indirect=True)
def test_a_patient_not_marked_as_test_data_is_refused_and_nothing_is_written(env, tmp_path):
    before = env.kept()
    code, out = leak_check(env, tmp_path, patient="pat-alice", proxy=None, encounter="enc-alice-bwh")
    assert code == 2, out
    assert "not marked as a test patient" in out
    assert env.kept() == before
    assert not [c for c in env.calls() if c["method"] == "POST"]


@pytest.mark.parametrize("env", ["generic"], indirect=True)
def test_a_proxy_sign_in_for_another_patient_is_refused(env, tmp_path):
    code, out = leak_check(env, tmp_path, proxy="Patient/pat-alice")
    assert code == 2, out
    assert "sign-in is for another patient" in out
    assert env.kept()["DocumentReference"] == 0


@pytest.mark.parametrize("env", ["oracle"], indirect=True)
def test_without_a_clinician_sign_in_the_backend_services_token_writes(env, tmp_path):
    code, out = leak_check(env, tmp_path, clinician=False)
    assert code == 0, out
    assert "wrote DocumentReference/" in out


@pytest.mark.parametrize("env", [(name, {"NEUTRAL_CHECKIN_RECORD": True}) for name in PERSONALITIES], indirect=True)
def test_where_the_neutral_checkin_line_is_allowed_the_check_writes_and_reads_it_too(env, tmp_path):
    code, out = leak_check(env, tmp_path)
    assert code == 0, out
    assert out.count("wrote DocumentReference/") == 2, out  # the referral's note and the check-in line
    if env.personality == "generic":
        assert "left in the test patient's chart" not in out and env.documents(TEST_PATIENT) == []


@pytest.mark.parametrize("env", [("epic", {"NEUTRAL_CHECKIN_RECORD": True,
                                          "RESTRICTED_NOTE_TYPE": ORDINARY_NOTE["epic"]})], indirect=True)
def test_the_checkin_line_filed_under_a_note_type_the_portal_releases_fails_the_check(env, tmp_path):
    code, out = leak_check(env, tmp_path)
    assert code == 1, out
    # Both notes come back, the check-in line among them: the check covers it.
    assert [r.split("/")[0] for r in leaks(out, "patient")] == ["DocumentReference", "DocumentReference"], out
