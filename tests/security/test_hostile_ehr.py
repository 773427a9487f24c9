"""A hostile EHR never gets a 500 out of the app: answers of the wrong JSON types, an ``extension`` nested 3,000
levels deep, a same-origin redirect loop (the sandbox EHR's ``hostile`` and ``redirect_loop`` faults), and a CDS
call with a valid JWT and a body nested 100,000 levels deep. Each ends on a plain page (4xx), never 5xx."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox_ehr.harness.vendor import start
from smart_app import create_app

pytestmark = pytest.mark.security

PATIENT, ENCOUNTER = "pat-alice", "enc-alice-bwh"
CASES = {
    "Patient.name = 12345": {"hostile": "wrong_types", "hostile_fields": {"Patient": {"name": 12345}}},
    "Encounter.location = str": {"hostile": "wrong_types", "hostile_fields": {"Encounter": {"location": "str"}}},
    "every read element of the wrong type": {"hostile": "wrong_types"},
    "extension nested 3,000 deep": {"hostile": "deep_extension"},
    "same-origin redirect loop": {"redirect_loop": ["fhir_read"]},
    "token answer of the wrong types": {"hostile": "wrong_types", "hostile_on": ["token"]},
    "discovery answer of the wrong types": {"hostile": "wrong_types", "hostile_on": ["discovery"]},
    "token answer nested 3,000 deep": {"hostile": "deep_extension", "hostile_on": ["token"]},
    "redirect loop on the token and discovery endpoints": {"redirect_loop": ["token", "discovery", "jwks"]},
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    environment = start("generic", tmp_path_factory.mktemp("hostile"))
    yield environment
    environment.close()


def launch_pages(env, client) -> list[tuple[str, int]]:
    """The EHR launch through the callback, then every page the callback leads to: (path, status) of each."""
    form = {"practitioner": "prac-avery", "patient": PATIENT, "encounter": ENCOUNTER, "need_patient_banner": "1"}
    resp = requests.post(env.server.url + "/ehr/launch", data=form, allow_redirects=False, timeout=10)
    launch = re.search(r"[?&]launch=([^&]+)", resp.headers["Location"]).group(1)
    start_ = client.get(f"/launch?iss={quote(env.iss)}&launch={launch}")
    seen = [("/launch", start_.status_code)]
    if start_.status_code != 302:
        return seen
    at_ehr = requests.get(start_.headers["Location"], allow_redirects=False, timeout=10)
    path = "/callback?" + at_ehr.headers["Location"].split("?", 1)[1]
    for _ in range(5):
        resp = client.get(path)
        seen.append((path.split("?")[0], resp.status_code))
        if resp.status_code not in (301, 302, 303) or not resp.headers["Location"].startswith("/"):
            break
        path = resp.headers["Location"]
    return seen


@pytest.mark.parametrize("case", CASES)
def test_a_hostile_ehr_answer_gets_a_plain_page_never_a_500(env, case):
    env.app.extensions.pop("smart_discovery", None)  # discovery is read again, under the fault
    env.faults(**CASES[case])
    try:
        seen = launch_pages(env, env.app.test_client())
    finally:
        env.faults()
        env.app.extensions.pop("smart_discovery", None)  # and read again by the next test, without it
    assert all(status < 500 for _path, status in seen), seen


def test_a_cds_call_with_a_valid_jwt_and_a_body_nested_100k_deep_is_a_400(tmp_path, sandbox):
    from tests.cds.test_cds_hooks import SID, token
    from tests.conftest import app_config

    app = create_app(app_config(f"sqlite:///{tmp_path / 'app.db'}", ALLOWED_ISS=[sandbox.iss],
                                APP_BASE_URL="https://ipv.example.test", CDS={
                                    "interval_months": 12, "population": "uspstf",
                                    "clients": [{"iss": sandbox.url, "jwks_url": sandbox.url + "/cds-client/jwks.json",
                                                 "fhir_servers": [sandbox.iss], "site": "bwh"}]}))
    try:
        depth = 100_000
        body = '{"hook":"patient-view","context":' + "[" * depth + "]" * depth + "}"
        bearer = token(sandbox, f"https://ipv.example.test/cds-services/{SID}")
        resp = app.test_client().post(f"/cds-services/{SID}", data=body, content_type="application/json",
                                      headers={"Authorization": f"Bearer {bearer}"})
        assert resp.status_code == 400
    finally:
        app.extensions["db_engine"].dispose()


# Elements the app reads from each resource of a launch (fhir/context.py), and values of every JSON type for them.
READ_FIELDS = {
    "Patient": ["name", "birthDate", "gender", "communication", "identifier", "extension", "id"],
    "Encounter": ["class", "period", "location", "serviceProvider", "extension", "subject", "id", "participant"],
    "Location": ["name", "identifier", "address", "partOf", "id"],
    "Organization": ["name", "identifier", "partOf", "id"],
    "PractitionerRole": ["code", "specialty", "location", "organization", "healthcareService", "active",
                         "practitioner"],
    "Practitioner": ["name", "identifier"],
}
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2, 10**12), st.text(max_size=8),
                    st.sampled_from(["", "Patient/pat-alice", "Location/../x", "\u202e", "official"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3),
    st.dictionaries(st.sampled_from(["reference", "text", "coding", "code", "system", "use", "given", "family",
                                     "start", "location", "value", "language", "url"]), inner, max_size=3)),
    max_leaves=6)


@st.composite
def hostile_tables(draw) -> dict[str, dict[str, object]]:
    table = {}
    for rtype in draw(st.lists(st.sampled_from(sorted(READ_FIELDS)), min_size=1, max_size=3, unique=True)):
        fields = draw(st.lists(st.sampled_from(READ_FIELDS[rtype]), min_size=1, max_size=3, unique=True))
        table[rtype] = {f: draw(VALUES) for f in fields}
    return table


def test_hostile_ehr_fuzz_mutating_every_field_the_app_reads_never_answers_5xx(env):
    """Hypothesis mutates the types and values of the elements the app reads of Patient, Encounter, Location,
    Organization, PractitionerRole and Practitioner; each example is a whole launch through its first page."""
    failures: list[tuple[dict, list]] = []

    @settings(max_examples=200, deadline=None, database=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow])
    @given(table=hostile_tables())
    def run(table):
        env.faults(hostile="wrong_types", hostile_fields=table)
        seen = launch_pages(env, env.app.test_client())
        launches.append(seen)
        if any(status >= 500 for _path, status in seen):
            failures.append((table, seen))

    launches: list[list] = []
    try:
        run()
    finally:
        env.faults()
    assert not failures, failures[:3]
    assert len(launches) >= 20 and sum(len(seen) > 2 for seen in launches) >= 10  # most reached a page
