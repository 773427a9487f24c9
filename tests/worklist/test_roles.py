"""Role mapping from the deployment file: SNOMED, NUCC prefixes, local code systems and text patterns."""

from __future__ import annotations

import pytest

from config.current import replace_settings
from config.files import SettingsError
from config.settings import load_settings
from smart_app.launch.roles import user_roles

pytestmark = pytest.mark.worklist


def _role(codings=(), texts=(), active=True):
    return {"active": active, "codings": list(codings), "texts": list(texts)}


def _user(*roles):
    return {"reference": "Practitioner/x", "practitioner_roles": list(roles)}


EPIC_LOCAL = {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.10.836982.1040", "code": "35", "display": "SW"}


@pytest.mark.parametrize(("deployment", "role", "expected"), [
    ("sandbox", _role([{"system": "http://snomed.info/sct", "code": "106328005"}]), ["social_worker"]),
    ("sandbox", _role([{"system": "http://nucc.org/provider-taxonomy", "code": "1041C0700X"}]), ["social_worker"]),
    ("sandbox", _role([{"system": "http://nucc.org/provider-taxonomy", "code": "207Q00000X"}]), []),
    ("epic", _role([EPIC_LOCAL]), ["social_worker"]),
    ("epic", _role([{**EPIC_LOCAL, "code": "36"}]), []),
    ("epic", _role(texts=["Jane Roe, LICSW"]), ["social_worker"]),
    ("oracle-health", _role(texts=["Medical social worker"]), ["social_worker"]),
    ("oracle-health", _role([{"system": "https://fhir.cerner.com/t/codeSet/88", "code": "123",
                              "display": "Medical Social Worker"}]), ["social_worker"]),
    ("oracle-health", _role(texts=["Social Work Supervisor"]), ["social_worker", "program_manager"]),
    ("oracle-health", _role(texts=["Physician"]), []),
    ("oracle-health", _role(texts=["Medical social worker"], active=False), []),
    ("epic", _role(texts=["DV Program Manager"]), ["program_manager"]),
])
def test_example_deployments_map_codes_and_texts(deployment, role, expected):
    assert user_roles(_user(role), load_settings({"IPV_DEPLOYMENT": deployment})) == expected


def test_without_a_roles_block_only_the_standard_codes_count():
    dep = load_settings({"IPV_DEPLOYMENT": "sandbox", "ROLES": None})
    assert user_roles(_user(_role(texts=["Medical social worker"])), dep) == []
    assert user_roles(_user(_role([{"system": "http://snomed.info/sct", "code": "106328005"}])), dep) == \
        ["social_worker"]


@pytest.mark.parametrize("raw", [{"nurse": {}}, {"social_worker": {"codes": [{"system": "x"}]}},
                                 {"social_worker": {"texts": ["(unclosed"]}}, ["social_worker"]])
def test_malformed_mapping_names_the_rule(raw):
    with pytest.raises(SettingsError, match="roles"):
        load_settings({"ROLES": raw})


def test_text_only_social_worker_reaches_the_queue_over_http(app, make_launch):
    """The Oracle test data case: a social worker coded only as text got 403 before the mapping."""
    from tests.worklist.support import EHR1, role, worker_context

    replace_settings(app, IPV_DEPLOYMENT="oracle-health")
    client = app.test_client()
    lid = make_launch(client, context=worker_context("Practitioner/sw", "S W", [role(texts=["Medical social worker"])]),
                      iss=EHR1, kind="standalone")
    resp = client.get(f"/l/{lid}/worklist")
    assert resp.status_code == 200 and 'data-reason="no-coverage"' in resp.get_data(as_text=True)
