"""Settings are documented and deployments load; the README keeps the set-up commands."""

from pathlib import Path

import pytest

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
