"""One typed settings model: every file key known, one precedence rule, the README's table generated from it."""

import re
from pathlib import Path

import pytest
import yaml

from config import docs
from config.checks import check_config, errors
from config.deployment import DEPLOYMENTS_DIR, Site, Tuning
from config.ehr_profile import PROFILES_DIR, EhrProfile, NoteCoding, ProfileError
from config.files import SettingsError
from config.settings import RETIRED_VARIABLES, EnvironmentFields, Startup, load_settings, profile_layer

ROOT = Path(__file__).resolve().parents[1]
SANDBOX_KEY = ROOT / "sandbox_ehr" / "keys" / "rs384-private.pem"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """Nothing from the caller's environment: each test sets what it reads."""
    for name in [*(n.upper() for n in EnvironmentFields.model_fields), *RETIRED_VARIABLES]:
        monkeypatch.delenv(name, raising=False)


def write_deployment(path: Path, **fields) -> Path:
    data = {"client_id": "ipv-screen-site-1", "allowed_iss": ["https://fhir.hospital.test/r4"],
            "ehr_profile": "sandbox", **fields}
    path.write_text(yaml.safe_dump(data))
    return path


def test_readme_starts_with_the_two_setup_commands():
    head = "\n".join((ROOT / "README.md").read_text().splitlines()[:8])
    assert "make demo" in head and "make test" in head


def test_ci_runs_the_readme_test_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_the_readme_settings_tables_are_generated_from_the_model():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert docs.render(readme) == readme, "README.md is out of date: run python -m config.docs"
    for name in [*(f"`{n.upper()}`" for n in EnvironmentFields.model_fields), *(f"`{n}`" for n in Site.model_fields),
                 *(f"`tuning.{n}`" for n in Tuning.model_fields)]:
        assert name in readme


def test_the_readme_check_fails_on_a_stale_table():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    stale = readme.replace("`tuning.http_timeout_seconds`", "`HTTP_TIMEOUT_SECONDS`")
    assert docs.render(stale) != stale


def test_hospital_it_sets_at_most_twelve_environment_variables():
    assert len(EnvironmentFields.model_fields) <= 12
    example = (ROOT / "deploy" / "ipv.env.example").read_text().splitlines()
    names = [line.split("=", 1)[0] for line in example if line.strip() and not line.startswith("#")]
    assert len(names) <= 12
    assert set(names) <= {n.upper() for n in EnvironmentFields.model_fields}


def test_each_setting_has_one_name_whichever_place_sets_it():
    """The deployment's key and the environment's variable are the same setting only for the private key file."""
    groups = [set(EnvironmentFields.model_fields), set(Site.model_fields), set(Tuning.model_fields),
              set(Startup.model_fields)]
    shared = {name for i, a in enumerate(groups) for b in groups[i + 1:] for name in a & b}
    assert shared == {"private_key_file"}


def test_the_profile_settings_are_the_documented_ones():
    profile = EhrProfile.load("sandbox").with_restricted_note_type(
        EhrProfile.load("epic").note_type)
    assert set(profile_layer(profile)) == set(docs.FROM_PROFILE)


def test_the_ehr_profile_readme_lists_exactly_the_profile_keys():
    text = (PROFILES_DIR / "README.md").read_text(encoding="utf-8")
    documented = {name for row in text.splitlines() if row.startswith("| `")
                  for name in re.findall(r"`([a-z_]+)", row.split("|")[1])}
    keys = set(EhrProfile.model_fields) - {"ref"}
    assert documented == keys


@pytest.mark.parametrize("path", sorted(DEPLOYMENTS_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_example_deployments_load(path):
    dep = load_settings({"IPV_DEPLOYMENT": str(path)})
    assert dep.client_id
    assert dep.client_auth in {"none", "client_secret_basic", "client_secret_post", "private_key_jwt"}
    assert dep.allowed_iss and all(u.startswith(("https://", "http://127.0.0.1")) for u in dep.allowed_iss)
    assert "openid" in dep.scopes_ehr and "launch" in dep.scopes_ehr.split()


@pytest.mark.parametrize("path", sorted(PROFILES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_bundled_profiles_load(path):
    profile = EhrProfile.load(path.stem)
    assert profile.ref == path.stem and profile.sources


def test_epic_uses_v1_scopes_and_sandbox_v2():
    assert "patient/Patient.read" in load_settings({"IPV_DEPLOYMENT": "epic"}).scopes_ehr
    assert "patient/Patient.r" in load_settings({"IPV_DEPLOYMENT": "sandbox"}).scopes_ehr.split()


def test_unknown_deployment_is_refused_clearly():
    with pytest.raises(SettingsError, match="deployment file not found"):
        load_settings({"IPV_DEPLOYMENT": "no-such-ehr"})


# -- unknown and retired keys ----------------------------------------------------------------------------------
@pytest.mark.parametrize("fields, named", [
    ({"client_id_typo": "x"}, "client_id_typo: unknown key"),
    ({"tuning": {"http_timeout": 5}}, "tuning.http_timeout: unknown key"),
    ({"worklist": {"time_zone": "America/New_York", "memory_days": 30}},
     "worklist.memory_days: unknown key (now tuning.worklist_memory_days)"),
    ({"client_secret": "s3cret"}, "client_secret: unknown key (a secret is never kept in the deployment file"),
    ({"advocate_site": {}}, "advocate_site: unknown key (nothing read it"),
    ({"tuning": {"http_timeout_seconds": "soon"}}, "tuning.http_timeout_seconds: Input should be a valid number"),
    ({"cds": {"clients": [{"iss": "https://ehr.test"}]}}, "cds.clients.0: needs jwks or jwks_url"),
    ({"roles": {"nurse": {"texts": ["nurse"]}}}, "roles.nurse"),
    ({"ehrs": {"bwh": {"name": "BWH"}}}, "ehrs.bwh: names no iss and no iss_patterns"),
    ({"routing": {"teams": [{"id": "t", "name": "T", "ehr": "mgh"}]}, "ehrs": {"bwh": {"iss": ["https://b/fhir"]}}},
     "routing.teams.0: ehr 'mgh' is not in ehrs"),
    ({"routing": {"teams": [{"id": "t"}]}}, "routing.teams.0.name: Field required"),
])
def test_a_bad_deployment_key_stops_start_up_naming_the_key_and_the_file(tmp_path, fields, named):
    path = write_deployment(tmp_path / "site.yaml", **fields)
    with pytest.raises(SettingsError) as info:
        load_settings({"IPV_DEPLOYMENT": str(path)})
    assert named in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("key, value, named", [
    ("create_returns_resource", True, "create_returns_resource: unknown key (nothing read it"),
    ("read_back", {"enabled": True, "tries": 2}, "read_back.tries: unknown key"),
    ("labels_kept", "maybe", "labels_kept: Input should be 'kept', 'dropped' or 'unknown'"),
    ("mode", "transaction", "mode transaction needs transaction: true"),
])
def test_a_bad_profile_key_stops_start_up_naming_the_key_and_the_file(tmp_path, key, value, named):
    raw = yaml.safe_load((PROFILES_DIR / "sandbox.yaml").read_text())
    raw[key] = value
    if key == "mode":
        raw["transaction"] = False
    profile = tmp_path / "our-ehr.yaml"
    profile.write_text(yaml.safe_dump(raw))
    path = write_deployment(tmp_path / "site.yaml", ehr_profile="./our-ehr.yaml")
    with pytest.raises(ProfileError) as info:
        load_settings({"IPV_DEPLOYMENT": str(path)})
    assert named in str(info.value) and str(profile) in str(info.value)


def test_an_unknown_override_is_refused():
    with pytest.raises(SettingsError, match="override: HTTP_TIMEOUT: unknown setting"):
        load_settings({"HTTP_TIMEOUT": 5})
    with pytest.raises(SettingsError, match="http_timeout_seconds: Input should be a valid number"):
        load_settings({"HTTP_TIMEOUT_SECONDS": "soon"})


def test_a_variable_no_longer_read_from_the_environment_is_an_error_saying_where_it_went(monkeypatch):
    monkeypatch.setenv("EMBEDDED_IN_IFRAME", "1")
    with pytest.raises(SettingsError, match="EMBEDDED_IN_IFRAME \\(environment\\): no longer read from the "
                                            "environment: set tuning.embedded_in_iframe in the deployment file"):
        load_settings()


def test_a_malformed_variable_is_named(monkeypatch):
    monkeypatch.setenv("TRUSTED_PROXY_HOPS", "one")
    with pytest.raises(SettingsError, match="TRUSTED_PROXY_HOPS \\(environment\\)"):
        load_settings()


# -- the one precedence rule: environment, deployment file, EHR profile, default -------------------------------
def test_environment_over_deployment_file(tmp_path, monkeypatch):
    path = write_deployment(tmp_path / "site.yaml", private_key_file="site-key.pem")
    assert load_settings({"IPV_DEPLOYMENT": str(path)}).private_key_file == str(tmp_path / "site-key.pem")
    monkeypatch.setenv("PRIVATE_KEY_FILE", "/run/secrets/key.pem")
    assert load_settings({"IPV_DEPLOYMENT": str(path)}).private_key_file == "/run/secrets/key.pem"


def test_deployment_file_over_ehr_profile_over_default(tmp_path):
    epic = write_deployment(tmp_path / "epic-site.yaml", ehr_profile="epic")
    assert load_settings({"IPV_DEPLOYMENT": str(epic)}).outbox_max_attempts == 8  # the profile's retry
    tuned = write_deployment(tmp_path / "tuned.yaml", ehr_profile="epic", tuning={"outbox_max_attempts": 3})
    assert load_settings({"IPV_DEPLOYMENT": str(tuned)}).outbox_max_attempts == 3
    assert load_settings({"IPV_DEPLOYMENT": str(epic)}).outbox_final_retry_delay == 60  # neither sets it


def test_the_sites_restricted_note_type_is_the_notes_type(tmp_path):
    coding = {"system": "urn:oid:1.2.3", "code": "SW-CONF", "display": "Confidential social work note"}
    path = write_deployment(tmp_path / "site.yaml", ehr_profile="oracle-health", restricted_note_type=coding)
    settings = load_settings({"IPV_DEPLOYMENT": str(path)})
    assert settings.profile.document_type == coding
    assert settings.profile.write_rules.document_type == coding


def test_overrides_go_through_the_same_model():
    settings = load_settings({"OUTBOX_MAX_ATTEMPTS": "4", "ALLOWED_ISS": "https://a.test/fhir/, https://b.test"})
    assert settings.outbox_max_attempts == 4
    assert settings.allowed_iss == ["https://a.test/fhir", "https://b.test"]
    assert settings.replace(outbox_max_attempts=5).outbox_max_attempts == 5
    with pytest.raises(SettingsError):
        settings.replace(outbox_max_attempts="many")


# -- the deployment against its EHR profile --------------------------------------------------------------------
def _profile(tmp_path: Path, **changes) -> str:
    raw = yaml.safe_load((PROFILES_DIR / "sandbox.yaml").read_text())
    raw.update(changes)
    path = tmp_path / "our-ehr.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_online_access_asked_of_an_ehr_without_it_is_an_error_naming_both_files(tmp_path):
    profile = _profile(tmp_path, online_access=False)
    path = write_deployment(tmp_path / "site.yaml", ehr_profile=profile, scopes_ehr="launch openid online_access")
    found = [str(p) for p in errors(check_config(load_settings({"IPV_DEPLOYMENT": str(path)})))]
    assert any("online_access" in p and str(path) in p and profile in p for p in found), found


def test_backend_services_on_an_ehr_without_them_is_an_error_naming_both_files(tmp_path):
    profile = _profile(tmp_path, backend_services=False)
    path = write_deployment(tmp_path / "site.yaml", ehr_profile=profile, client_auth="private_key_jwt",
                            private_key_file=str(SANDBOX_KEY), backend_services={"scope": "system/Task.c"})
    found = [str(p) for p in errors(check_config(load_settings({"IPV_DEPLOYMENT": str(path)})))]
    assert any("backend_services" in p and str(path) in p and profile in p for p in found), found


def test_the_builders_take_the_profiles_rules_as_plain_values():
    coding = NoteCoding(system="urn:oid:1.2.3", code="SW-CONF", display="Confidential social work note")
    rules = EhrProfile.load("oracle-health").with_restricted_note_type(coding).write_rules
    assert rules.document_type == coding.as_dict() and rules.requires_author and rules.write_context == "user"
    assert rules.needed_scope("DocumentReference") == "user/DocumentReference.write"
