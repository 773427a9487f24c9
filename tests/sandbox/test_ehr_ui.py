"""EHR simulator page (/ehr) and the synthetic seed data the demo and tests rely on."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

ISS = "http://ehr.test/fhir"
SITES = ("bwh", "bw-faulkner", "sjphc", "brookside", "whittier", "mgh", "mgh-chelsea", "mgh-revere", "baystate")


def _launch_form(**over) -> dict:
    form = {"practitioner": "prac-avery", "patient": "pat-alice", "encounter": "enc-alice-bwh",
            "need_patient_banner": "1"}
    form.update(over)
    return {k: v for k, v in form.items() if v is not None}


def _token_for_launch(fhir, launch: str) -> dict:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect = "http://127.0.0.1:5000/callback"
    params = {"response_type": "code", "client_id": "ipv-screen-public", "redirect_uri": redirect,
              "scope": "launch openid fhirUser patient/*.rs", "state": "s1", "aud": ISS, "launch": launch,
              "code_challenge": challenge, "code_challenge_method": "S256"}
    r = fhir.get("/auth/authorize?" + urlencode(params))
    code = parse_qs(urlsplit(r.headers["Location"]).query)["code"][0]
    return fhir.post("/auth/token", data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
                                          "code_verifier": verifier, "client_id": "ipv-screen-public"}).json


def test_root_redirects_to_the_simulator(fhir):
    r = fhir.get("/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/ehr")


def test_simulator_page_has_the_choosers(fhir):
    html = fhir.get("/ehr").get_data(as_text=True)
    for element in ('id="practitioner"', 'id="patient"', 'id="encounter"', 'id="launch-button"',
                    'id="need_patient_banner"', 'id="iframe"', 'id="new_window"'):
        assert element in html
    assert "(Social worker)" in html and "(Clinician)" in html
    assert '<option value="">No encounter</option>' in html
    assert len(re.findall(r'data-patient="', html)) >= 13  # every encounter, tagged with its patient
    assert "http://app.test/launch" in html


def test_launch_redirects_to_the_app_with_iss_and_launch(fhir):
    r = fhir.post("/ehr/launch", data=_launch_form())
    assert r.status_code == 303
    target = urlsplit(r.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == "http://app.test/launch"
    query = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert query["iss"] == ISS and query["launch"]
    body = _token_for_launch(fhir, query["launch"])
    assert (body["patient"], body["encounter"], body["need_patient_banner"]) == ("pat-alice", "enc-alice-bwh", True)


def test_launch_without_encounter_as_a_social_worker(fhir):
    r = fhir.post("/ehr/launch", data=_launch_form(practitioner="prac-devon", patient="pat-kim", encounter="",
                                                   need_patient_banner=None))
    launch = parse_qs(urlsplit(r.headers["Location"]).query)["launch"][0]
    body = _token_for_launch(fhir, launch)
    assert body["patient"] == "pat-kim" and "encounter" not in body and body["need_patient_banner"] is False
    import jwt

    assert jwt.decode(body["id_token"], options={"verify_signature": False})["fhirUser"].endswith(
        "/Practitioner/prac-devon")


@pytest.mark.parametrize("form, needle", [
    (_launch_form(encounter="enc-carmen-sjphc"), "another patient"),
    (_launch_form(practitioner="prac-nobody"), "clinician"),
    (_launch_form(patient="pat-nobody", encounter=""), "patient"),
])
def test_bad_launch_choices_are_refused(fhir, form, needle):
    r = fhir.post("/ehr/launch", data=form)
    assert r.status_code == 400
    html = r.get_data(as_text=True)
    assert 'id="launch-error"' in html and needle in html


def test_iframe_launch_embeds_the_app(fhir):
    r = fhir.post("/ehr/launch", data=_launch_form(iframe="1"))
    assert r.status_code == 303 and "/ehr/frame/" in r.headers["Location"]
    page = fhir.get(urlsplit(r.headers["Location"]).path).get_data(as_text=True)
    src = re.search(r'<iframe id="app-frame"[^>]*src="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert src.startswith("http://app.test/launch?") and "launch=" in src
    assert "Alice" in page
    assert fhir.get("/ehr/frame/unknown").status_code == 404


# --- seed data (issue 2) -----------------------------------------------------------------------------------

@pytest.fixture
def store(sandbox_app):
    return sandbox_app.extensions["sandbox_store"]


def _site_of_location(store, location_id: str) -> str | None:
    loc = store.read("Location", location_id)
    for ident in loc.get("identifier", []):
        if ident.get("system") == "urn:ipv-sandbox:site":
            return ident["value"]
    return None


def test_seed_has_patients_with_encounters_at_every_site(store):
    patients = store.search("Patient")
    assert len(patients) >= 12
    sites = set()
    for enc in store.search("Encounter"):
        for loc in enc.get("location", []):
            sites.add(_site_of_location(store, loc["location"]["reference"].split("/")[1]))
    assert set(SITES) <= sites
    for site in SITES:
        assert store.read("Location", f"loc-{site}")
    assert store.read("Organization", "org-baystate")


def _language(patient: dict) -> set[str]:
    return {c.get("code") for comm in patient.get("communication", []) for c in comm["language"].get("coding", [])}


def test_seed_edge_cases(store):
    patients = store.search("Patient")
    with_encounter = {e["subject"]["reference"].split("/")[1] for e in store.search("Encounter")}
    assert any(not p.get("address") for p in patients), "a patient without an address"
    assert any("es" in _language(p) for p in patients), "a Spanish-speaking patient"
    assert any("pt" in _language(p) for p in patients), "a Portuguese-speaking patient"
    assert any(p["id"] not in with_encounter for p in patients), "a patient with no encounter"


def test_seed_has_social_workers(store):
    roles = store.search("PractitionerRole", {"role": "http://snomed.info/sct|106328005"})
    assert roles
    for role in roles:
        assert store.exists("Practitioner", role["practitioner"]["reference"].split("/")[1])


def test_seed_references_resolve(store):
    for rtype in ("Encounter", "PractitionerRole", "Location", "Organization"):
        for resource in store.search(rtype):
            for key in ("subject", "serviceProvider", "practitioner", "organization", "managingOrganization",
                        "partOf"):
                ref = (resource.get(key) or {}).get("reference")
                if ref:
                    t, i = ref.split("/")
                    assert store.exists(t, i), f"{rtype}/{resource['id']}.{key} -> {ref}"
