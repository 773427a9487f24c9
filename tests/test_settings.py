"""Settings are documented and deployments load; the README keeps the set-up commands."""

import re
from pathlib import Path

import pytest
import yaml

from config.ehr_profile import PROFILES_DIR, EhrProfile, NoteCoding, ProfileError
from config.settings import DEFAULTS, DEPLOYMENTS_DIR, Deployment

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in DEFAULTS if f"`{name}`" not in readme]
    assert missing == []


def test_readme_starts_with_the_two_setup_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:8])
    assert "make demo" in head and "make test" in head


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("path", sorted(DEPLOYMENTS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_example_deployments_load(path):
    dep = Deployment.load(str(path))
    assert dep.client_id
    assert dep.client_auth in {"none", "client_secret_basic", "client_secret_post", "private_key_jwt"}
    assert dep.allowed_iss and all(u.startswith(("https://", "http://127.0.0.1")) for u in dep.allowed_iss)
    assert "openid" in dep.scopes_ehr and "launch" in dep.scopes_ehr.split()


def test_epic_uses_v1_scopes_and_sandbox_v2():
    assert "patient/Patient.read" in Deployment.load("epic").scopes_ehr
    assert "patient/Patient.r" in Deployment.load("sandbox").scopes_ehr.split()


def test_unknown_deployment_is_refused_clearly():
    with pytest.raises(FileNotFoundError, match="deployment file not found"):
        Deployment.load("no-such-ehr")


# -- the EHR profile: what an EHR can do, every key known ----------------------------------------------------
@pytest.mark.parametrize("path", sorted(PROFILES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_profiles_load(path):
    profile = EhrProfile.load(path.stem)
    assert profile.ref == path.stem and profile.sources


@pytest.mark.parametrize("key, value, named", [
    ("create_returns_resource", True, "create_returns_resource: unknown key (nothing read it"),
    ("read_back", {"enabled": True, "tries": 2}, "read_back.tries: unknown key"),
    ("labels_kept", "maybe", "labels_kept: Input should be 'kept', 'dropped' or 'unknown'"),
    ("mode", "transaction", "mode transaction needs transaction: true"),
])
def test_a_bad_profile_key_is_refused_naming_the_key_and_the_file(tmp_path, key, value, named):
    raw = yaml.safe_load((PROFILES_DIR / "sandbox.yaml").read_text())
    raw[key] = value
    if key == "mode":
        raw["transaction"] = False
    path = tmp_path / "our-ehr.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ProfileError) as info:
        EhrProfile.load(str(path))
    assert named in str(info.value) and str(path) in str(info.value)


def test_the_ehr_profile_readme_lists_exactly_the_profile_keys():
    text = (PROFILES_DIR / "README.md").read_text(encoding="utf-8")
    documented = {name for row in text.splitlines() if row.startswith("| `")
                  for name in re.findall(r"`([a-z_]+)", row.split("|")[1])}
    assert documented == set(EhrProfile.model_fields) - {"ref"}


def test_the_builders_take_the_profiles_rules_as_plain_values():
    coding = NoteCoding(system="urn:oid:1.2.3", code="SW-CONF", display="Confidential social work note")
    rules = EhrProfile.load("oracle-health").with_restricted_note_type(coding).write_rules
    assert rules.document_type == coding.as_dict() and rules.requires_author and rules.write_context == "user"
    assert rules.needed_scope("DocumentReference") == "user/DocumentReference.write"
