"""Fail closed: outside the demo and the tests, each dangerous configuration stops start-up, naming itself.

Each test starts from a configuration a hospital could run (``prod_env``: its own deployment file and key,
https base URL, strong secrets) and breaks one thing, in the environment or in the deployment file.
``create_app()`` is called exactly as gunicorn calls it, from the environment alone;
`flask check-config` and gunicorn itself are run as processes at the end.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from config.checks import SANDBOX_KEY_FINGERPRINTS, check_config, errors
from config.current import settings_of
from config.ehr_profile import PROFILES_DIR
from config.settings import RETIRED_VARIABLES, EnvironmentFields, load_settings
from smart_app import create_app
from smart_app.ops.config_check import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SANDBOX_KEYS = ROOT / "sandbox_ehr" / "keys"
FLASK = Path(sys.executable).with_name("flask")
GUNICORN = Path(sys.executable).with_name("gunicorn")


def write_key(path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


ENVIRONMENT = [*(name.upper() for name in EnvironmentFields.model_fields), *RETIRED_VARIABLES]


def write_deployment(path: Path, **fields) -> Path:
    data = {
        "client_id": "ipv-screen-prod-7f3a",
        "client_auth": "private_key_jwt",
        "signing_alg": "RS384",
        "key_id": "prod-1",
        "allowed_iss": ["https://fhir.hospital.test/api/FHIR/R4"],
        "scopes_ehr": "launch openid fhirUser patient/Patient.r online_access",
        "scopes_standalone": "launch/patient openid fhirUser",
        "ehr_profile": "generic-smart2",
        # generic-smart2 does not promise to keep security labels: the site's restricted note type protects it.
        "restricted_note_type": {"system": "urn:oid:1.2.840.114350.1.13.0.1.7.4.737880.5010", "code": "900001",
                                 "display": "Restricted social work note"},
        # A one-process trial on SQLite (the tests' database); the import folder inside the test's folder.
        "tuning": {"allow_sqlite": True, "directory_import_dir": str(path.parent / "directory")},
    }
    tuning = fields.pop("tuning", {})
    data.update(fields)
    data["tuning"] = {k: v for k, v in {**data["tuning"], **tuning}.items() if v is not None}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def prod_env(tmp_path, monkeypatch) -> dict[str, str]:
    """A production configuration with no problem, set in the environment (nothing from the caller's)."""
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)
    key = write_key(tmp_path / "prod-key.pem")
    dep = write_deployment(tmp_path / "hospital.yaml", private_key_file=str(key))
    env = {
        "IPV_DEPLOYMENT": str(dep),
        "SECRET_KEY": secrets.token_urlsafe(48),
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "APP_BASE_URL": "https://ipv.hospital.test",
        "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379",  # memory:// counts per process
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def refused(match: str) -> None:
    """create_app() from the environment must refuse, naming ``match``."""
    with pytest.raises(ConfigError, match=match) as info:
        create_app()
    assert "refusing to start" in str(info.value)


def test_the_good_configuration_starts(prod_env):
    app = create_app()
    assert errors(check_config(settings_of(app))) == []
    assert app.config["TRUSTED_HOSTS"] == ["ipv.hospital.test"]  # from APP_BASE_URL
    app.extensions["db_engine"].dispose()


def test_no_deployment(prod_env, monkeypatch):
    monkeypatch.delenv("IPV_DEPLOYMENT")
    refused("IPV_DEPLOYMENT: not set")


def test_deployment_named_sandbox(prod_env, monkeypatch):
    monkeypatch.setenv("IPV_DEPLOYMENT", "sandbox")
    refused("IPV_DEPLOYMENT: the deployment named 'sandbox'")


def test_any_deployment_file_called_sandbox(prod_env, monkeypatch, tmp_path):
    copy = write_deployment(tmp_path / "sandbox.yaml", private_key_file=str(write_key(tmp_path / "k.pem")))
    monkeypatch.setenv("IPV_DEPLOYMENT", str(copy))
    refused("the deployment named 'sandbox'")


def test_missing_deployment_file(prod_env, monkeypatch, tmp_path):
    monkeypatch.setenv("IPV_DEPLOYMENT", str(tmp_path / "nowhere.yaml"))
    refused("deployment file not found")


def test_sandbox_private_key_by_path(prod_env, monkeypatch):
    monkeypatch.setenv("PRIVATE_KEY_FILE", str(SANDBOX_KEYS / "rs384-private.pem"))
    refused("PRIVATE_KEY_FILE: .* is a sandbox EHR key")


@pytest.mark.parametrize("name", ["rs384-private.pem", "es384-private.pem"])
def test_sandbox_private_key_copied_elsewhere(prod_env, monkeypatch, tmp_path, name):
    copy = tmp_path / "innocent.pem"
    copy.write_bytes((SANDBOX_KEYS / name).read_bytes())
    monkeypatch.setenv("PRIVATE_KEY_FILE", str(copy))
    refused("holds a sandbox EHR key")


def test_fingerprints_are_the_sandbox_public_keys():
    found = set()
    for pem in SANDBOX_KEYS.glob("*-public.pem"):
        key = serialization.load_pem_public_key(pem.read_bytes())
        found.add(hashlib.sha256(key.public_bytes(serialization.Encoding.DER,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest())
    assert found == SANDBOX_KEY_FINGERPRINTS


def test_missing_key_file(prod_env, monkeypatch, tmp_path):
    monkeypatch.setenv("PRIVATE_KEY_FILE", str(tmp_path / "gone.pem"))
    refused("PRIVATE_KEY_FILE: key file .*gone.pem does not exist")


def test_sandbox_client_secret(prod_env, monkeypatch, tmp_path):
    dep = write_deployment(tmp_path / "secret.yaml", client_auth="client_secret_basic")
    monkeypatch.setenv("IPV_DEPLOYMENT", str(dep))
    monkeypatch.setenv("CLIENT_SECRET", "sandbox-secret-not-for-production")
    refused("CLIENT_SECRET: is the sandbox EHR's public client secret")


def test_missing_client_secret(prod_env, monkeypatch, tmp_path):
    monkeypatch.setenv("IPV_DEPLOYMENT", str(write_deployment(tmp_path / "s.yaml", client_auth="client_secret_post")))
    refused("CLIENT_SECRET: client_auth client_secret_post needs CLIENT_SECRET")


def test_placeholder_client_id(prod_env, monkeypatch, tmp_path):
    dep = write_deployment(tmp_path / "p.yaml", client_id="REPLACE-with-Epic-client-id",
                           private_key_file=str(write_key(tmp_path / "k.pem")))
    monkeypatch.setenv("IPV_DEPLOYMENT", str(dep))
    refused("client_id: 'REPLACE-with-Epic-client-id' is a placeholder")


def test_placeholder_or_plain_http_iss(prod_env, monkeypatch, tmp_path):
    dep = write_deployment(tmp_path / "p.yaml", allowed_iss=["http://fhir.hospital.test/r4"],
                           private_key_file=str(write_key(tmp_path / "k.pem")))
    monkeypatch.setenv("IPV_DEPLOYMENT", str(dep))
    refused("allowed_iss: http://fhir.hospital.test/r4 is not https")


@pytest.mark.parametrize("value, said", [("", "not set"), ("x", "1 bytes"), ("a" * 31, "31 bytes")])
def test_short_secret_key(prod_env, monkeypatch, value, said):
    monkeypatch.setenv("SECRET_KEY", value)
    refused(f"SECRET_KEY: {said}: needs at least 32")


@pytest.mark.parametrize("value", ["", "not-a-fernet-key"])
def test_bad_token_encryption_key(prod_env, monkeypatch, value):
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", value)
    refused("TOKEN_ENCRYPTION_KEY")


def without_allow_sqlite(monkeypatch, tmp_path) -> None:
    dep = write_deployment(tmp_path / "pg.yaml", private_key_file=str(write_key(tmp_path / "k.pem")),
                           tuning={"allow_sqlite": None})
    monkeypatch.setenv("IPV_DEPLOYMENT", str(dep))


def test_sqlite_without_allow_sqlite(prod_env, monkeypatch, tmp_path):
    without_allow_sqlite(monkeypatch, tmp_path)
    refused("DATABASE_URL: sqlite:///.* is SQLite")


def test_default_database_is_sqlite_and_refused(prod_env, monkeypatch, tmp_path):
    without_allow_sqlite(monkeypatch, tmp_path)
    monkeypatch.delenv("DATABASE_URL")
    refused("DATABASE_URL: sqlite:///instance/app.db is SQLite")


@pytest.mark.parametrize("url", ["http://ipv.hospital.test", None])
def test_http_base_url(prod_env, monkeypatch, url):
    if url:
        monkeypatch.setenv("APP_BASE_URL", url)
    else:
        monkeypatch.delenv("APP_BASE_URL")  # the default is http://127.0.0.1:5000
    refused("APP_BASE_URL: http://.* is not an https:// URL")


def test_profile_that_cannot_protect_the_note_is_named_with_the_rest(prod_env, monkeypatch, tmp_path):
    dep = write_deployment(tmp_path / "p.yaml", restricted_note_type=None,
                           private_key_file=str(write_key(tmp_path / "k.pem")))
    monkeypatch.setenv("IPV_DEPLOYMENT", str(dep))
    monkeypatch.setenv("SECRET_KEY", "short")
    with pytest.raises(ConfigError) as info:
        create_app()
    assert "ehr_profile: EHR profile generic-smart2" in str(info.value)
    assert "restricted note type" in str(info.value) and "SECRET_KEY: 5 bytes" in str(info.value)


def test_insecure_cookie(prod_env, monkeypatch, tmp_path):
    dep = write_deployment(tmp_path / "c.yaml", private_key_file=str(write_key(tmp_path / "k.pem")),
                           tuning={"session_cookie_secure": False})
    monkeypatch.setenv("IPV_DEPLOYMENT", str(dep))
    refused("tuning.session_cookie_secure: is off")


def test_unknown_mode_is_not_a_way_out(prod_env, monkeypatch):
    monkeypatch.setenv("IPV_MODE", "staging")
    monkeypatch.setenv("IPV_DEPLOYMENT", "sandbox")
    refused("IPV_MODE: unknown mode 'staging'")


def test_every_problem_is_named_at_once(prod_env, monkeypatch):
    monkeypatch.setenv("IPV_DEPLOYMENT", "epic")  # the shipped example, unfilled (and no tuning.allow_sqlite)
    monkeypatch.setenv("SECRET_KEY", "short")
    with pytest.raises(ConfigError) as info:
        create_app()
    text = str(info.value)
    for part in ("client_id: 'REPLACE-with-Epic-client-id' is a placeholder", "PRIVATE_KEY_FILE: key file",
                 "allowed_iss: https://fhir.example-health.org", "SECRET_KEY: 5 bytes", "DATABASE_URL"):
        assert part in text


def test_embedded_without_the_ehr_in_frame_ancestors_warns(prod_env, monkeypatch, caplog, tmp_path):
    dep = write_deployment(tmp_path / "f.yaml", private_key_file=str(write_key(tmp_path / "k.pem")),
                           tuning={"embedded_in_iframe": True})
    monkeypatch.setenv("IPV_DEPLOYMENT", str(dep))
    with caplog.at_level(logging.WARNING):
        app = create_app()  # a warning, not a refusal
    assert "FRAME_ANCESTORS" in caplog.text and "https://fhir.hospital.test" in caplog.text
    app.extensions["db_engine"].dispose()
    monkeypatch.setenv("FRAME_ANCESTORS", "'self' https://fhir.hospital.test")
    assert check_config(load_settings()) == []


@pytest.mark.parametrize("how", ["IPV_MODE=test", "IPV_MODE=demo", "TESTING", "create_app IPV_MODE=demo"])
def test_the_tests_and_the_demo_say_so_explicitly(prod_env, monkeypatch, how, tmp_path):
    monkeypatch.setenv("IPV_DEPLOYMENT", "sandbox")
    monkeypatch.setenv("APP_BASE_URL", "http://127.0.0.1:5000")
    if how.startswith("IPV_MODE="):
        monkeypatch.setenv("IPV_MODE", how.split("=")[1])
        app = create_app()
    elif how == "TESTING":
        app = create_app({"TESTING": True})
    else:
        app = create_app({"IPV_MODE": "demo"})  # the demo runner (python -m sandbox_ehr.demo)
    assert settings_of(app).deployment_name == "sandbox"
    app.extensions["db_engine"].dispose()


def _run(cmd: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    drop = set(ENVIRONMENT)
    clean = {k: v for k, v in os.environ.items() if k not in drop}
    return subprocess.run(cmd, env={**clean, **env}, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_check_config_prints_every_problem_and_exits_1(prod_env, tmp_path):
    env = {**prod_env, "IPV_DEPLOYMENT": "oracle-health", "SECRET_KEY": "", "APP_BASE_URL": "http://x.test",
           "CLIENT_SECRET": "sandbox-secret-not-for-production"}
    out = _run([str(FLASK), "--app", "smart_app", "check-config"], env, ROOT)
    assert out.returncode == 1, out.stdout + out.stderr
    for part in ("ERROR: client_id: 'REPLACE-with-Oracle-Health-client-id' is a placeholder",
                 "ERROR: allowed_iss: https://fhir-ehr.cerner.com/r4/REPLACE-with-tenant-id is a placeholder",
                 "ERROR: CLIENT_SECRET: is the sandbox EHR's public client secret", "ERROR: SECRET_KEY: not set",
                 "ERROR: DATABASE_URL", "ERROR: APP_BASE_URL: http://x.test",
                 "ERROR: ehr_profile: EHR profile oracle-health", "7 error(s), 0 warning(s)"):
        assert part in out.stdout, out.stdout


def test_check_config_passes_a_good_configuration(prod_env, tmp_path):
    out = _run([str(FLASK), "--app", "smart_app", "check-config"], prod_env, ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 error(s), 0 warning(s)" in out.stdout


def test_check_config_names_a_key_that_cannot_be_read(prod_env, tmp_path):
    dep = write_deployment(tmp_path / "typo.yaml", private_key_file=str(write_key(tmp_path / "k.pem")),
                           tuning={"db_pool": 20})
    out = _run([str(FLASK), "--app", "smart_app", "check-config"], {**prod_env, "IPV_DEPLOYMENT": str(dep)}, ROOT)
    assert out.returncode == 1, out.stdout + out.stderr
    assert f"ERROR: {dep}: tuning.db_pool: unknown key" in out.stdout and "1 error(s)" in out.stdout


def test_gunicorn_refuses_to_boot_naming_the_problems(prod_env, tmp_path):
    env = {**prod_env, "IPV_DEPLOYMENT": "sandbox"}
    out = _run([str(GUNICORN), "--bind", f"unix:{tmp_path / 'g.sock'}", "--workers", "1", "--preload",
                "smart_app:create_app()"], env, ROOT)
    assert out.returncode != 0
    assert "refusing to start" in out.stderr and "the deployment named 'sandbox'" in out.stderr


# -- settings that cannot be read stop start-up in every mode, naming the key and the file ----------------------
def test_unknown_key_in_the_deployment_file(prod_env, monkeypatch, tmp_path):
    dep = write_deployment(tmp_path / "typo.yaml", private_key_file=str(write_key(tmp_path / "k.pem")),
                           tuning={"embeded_in_iframe": True})
    monkeypatch.setenv("IPV_DEPLOYMENT", str(dep))
    refused(f"{dep}: tuning.embeded_in_iframe: unknown key")
    monkeypatch.setenv("IPV_MODE", "test")  # not relaxed for the tests either
    refused("tuning.embeded_in_iframe: unknown key")


def test_unknown_key_in_the_ehr_profile(prod_env, monkeypatch, tmp_path):
    raw = yaml.safe_load((PROFILES_DIR / "generic-smart2.yaml").read_text())
    profile = tmp_path / "our-ehr.yaml"
    profile.write_text(yaml.safe_dump({**raw, "create_returns_resource": False}))
    dep = write_deployment(tmp_path / "p.yaml", ehr_profile="./our-ehr.yaml",
                           private_key_file=str(write_key(tmp_path / "k.pem")))
    monkeypatch.setenv("IPV_DEPLOYMENT", str(dep))
    refused(f"{profile}: create_returns_resource: unknown key")


def test_a_variable_the_environment_no_longer_sets(prod_env, monkeypatch):
    monkeypatch.setenv("SESSION_COOKIE_SECURE", "0")  # from an older ipv.env: now tuning.session_cookie_secure
    refused("SESSION_COOKIE_SECURE \\(environment\\): no longer read from the environment: set "
            "tuning.session_cookie_secure in the deployment file")


# -- the deployment against what its EHR profile says the EHR can do ---------------------------------------------
def _own_profile(tmp_path: Path, **changes) -> Path:
    raw = yaml.safe_load((PROFILES_DIR / "generic-smart2.yaml").read_text())
    path = tmp_path / "our-ehr.yaml"
    path.write_text(yaml.safe_dump({**raw, **changes}))
    return path


def test_online_access_of_an_ehr_that_has_none(prod_env, monkeypatch, tmp_path):
    profile = _own_profile(tmp_path, online_access=False)
    dep = write_deployment(tmp_path / "o.yaml", ehr_profile=str(profile), scopes_ehr="launch openid online_access",
                           private_key_file=str(write_key(tmp_path / "k.pem")))
    monkeypatch.setenv("IPV_DEPLOYMENT", str(dep))
    refused(f"online_access: {dep} asks for online_access \\(scopes_ehr\\) but the EHR profile {profile} says")


def test_backend_services_of_an_ehr_that_takes_none(prod_env, monkeypatch, tmp_path):
    profile = _own_profile(tmp_path, backend_services=False)
    dep = write_deployment(tmp_path / "b.yaml", ehr_profile=str(profile), backend_services={"scope": "system/Task.c"},
                           private_key_file=str(write_key(tmp_path / "k.pem")))
    monkeypatch.setenv("IPV_DEPLOYMENT", str(dep))
    refused(f"backend_services: {dep} turns on backend_services but the EHR profile {profile} says")


def test_backend_services_without_private_key_jwt(prod_env, monkeypatch, tmp_path):
    dep = write_deployment(tmp_path / "s.yaml", client_auth="client_secret_basic",
                           backend_services={"scope": "system/DocumentReference.c"})
    monkeypatch.setenv("IPV_DEPLOYMENT", str(dep))
    monkeypatch.setenv("CLIENT_SECRET", secrets.token_urlsafe(24))
    refused("backend_services: .* its client_auth is client_secret_basic")


def test_a_scope_the_profile_needs_missing_from_the_deployment_warns(prod_env, monkeypatch, tmp_path, caplog):
    profile = _own_profile(tmp_path, scopes=["patient/DocumentReference.cs"])
    dep = write_deployment(tmp_path / "w.yaml", ehr_profile=str(profile),
                           private_key_file=str(write_key(tmp_path / "k.pem")))
    monkeypatch.setenv("IPV_DEPLOYMENT", str(dep))
    with caplog.at_level(logging.WARNING):
        app = create_app()  # a warning, not a refusal
    assert "scopes_ehr" in caplog.text and "patient/DocumentReference.cs" in caplog.text
    app.extensions["db_engine"].dispose()


# -- weak production settings that check-config and start-up name ------------------------------------------------
@pytest.mark.security
def test_frame_ancestors_wildcard(prod_env, monkeypatch):
    monkeypatch.setenv("FRAME_ANCESTORS", "'self' *")
    refused("FRAME_ANCESTORS: \\* lets any site frame the app")


@pytest.mark.security
def test_trusted_hosts_wildcard(prod_env, monkeypatch, tmp_path):
    dep = write_deployment(tmp_path / "h.yaml", private_key_file=str(write_key(tmp_path / "k.pem")),
                           tuning={"trusted_hosts": ["*"]})
    monkeypatch.setenv("IPV_DEPLOYMENT", str(dep))
    refused("tuning.trusted_hosts: \\*: a wildcard answers any Host")


@pytest.mark.security
@pytest.mark.parametrize("same_as", ["short", "SECRET_KEY", "TOKEN_ENCRYPTION_KEY"])
def test_weak_metrics_token(prod_env, monkeypatch, same_as):
    token = "s3cr3t" if same_as == "short" else prod_env[same_as]
    monkeypatch.setenv("METRICS_TOKEN", token)
    refused("METRICS_TOKEN: 6 characters: needs at least 32" if same_as == "short"
            else f"METRICS_TOKEN: is the same as {same_as}")


@pytest.mark.security
def test_secret_key_equal_to_token_encryption_key(prod_env, monkeypatch):
    monkeypatch.setenv("SECRET_KEY", prod_env["TOKEN_ENCRYPTION_KEY"])
    refused("SECRET_KEY: is the same as TOKEN_ENCRYPTION_KEY")


@pytest.mark.security
@pytest.mark.parametrize("hops", ["-1", "3"])
def test_trusted_proxy_hops_out_of_range(prod_env, monkeypatch, hops):
    monkeypatch.setenv("TRUSTED_PROXY_HOPS", hops)
    refused("TRUSTED_PROXY_HOPS")


@pytest.mark.security
def test_private_key_readable_by_others(prod_env, monkeypatch, tmp_path):
    key = write_key(tmp_path / "open.pem")
    key.chmod(0o644)
    monkeypatch.setenv("PRIVATE_KEY_FILE", str(key))
    refused("PRIVATE_KEY_FILE: .*open.pem is readable or writable by every user on the host \\(mode 0644\\)")


@pytest.mark.security
def test_client_auth_none_warns(prod_env, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("IPV_DEPLOYMENT", str(write_deployment(tmp_path / "n.yaml", client_auth="none")))
    with caplog.at_level(logging.WARNING):
        app = create_app()  # a warning, not a refusal
    assert "client_auth: is none" in caplog.text
    app.extensions["db_engine"].dispose()


@pytest.mark.security
def test_check_config_memory_rate_limits_with_several_workers(prod_env):
    env = {**prod_env, "RATELIMIT_STORAGE_URI": "memory://"}
    out = _run([str(FLASK), "--app", "smart_app", "check-config"], {**env, "GUNICORN_WORKERS": "2"}, ROOT)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "ERROR: RATELIMIT_STORAGE_URI: memory:// with 2 workers" in out.stdout
    # The worker count unknown (check-config run by hand): a warning, whatever gunicorn will be given.
    out = _run([str(FLASK), "--app", "smart_app", "check-config"], env, ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "WARNING: RATELIMIT_STORAGE_URI: memory:// counts per process" in out.stdout


@pytest.mark.security
def test_gunicorn_refuses_memory_rate_limits_with_several_workers(prod_env, tmp_path):
    env = {**prod_env, "RATELIMIT_STORAGE_URI": "memory://"}
    out = _run([str(GUNICORN), "-c", "config/gunicorn.conf.py", "--bind", f"unix:{tmp_path / 'g.sock'}",
                "--workers", "2", "smart_app:create_app()"], env, ROOT)
    assert out.returncode != 0
    assert "refusing to start" in out.stderr and "RATELIMIT_STORAGE_URI: memory:// with 2 workers" in out.stderr


@pytest.mark.security
def test_gunicorn_refuses_the_demo_on_a_non_loopback_bind(prod_env, tmp_path):
    env = {**prod_env, "IPV_MODE": "demo", "IPV_DEPLOYMENT": "sandbox", "SECRET_KEY": "x"}
    out = _run([str(GUNICORN), "-c", "config/gunicorn.conf.py", "--bind", "0.0.0.0:0", "--workers", "1",
                "smart_app:create_app()"], env, ROOT)
    assert out.returncode != 0
    assert "refusing to start" in out.stderr and "IPV_MODE: demo on 0.0.0.0:0" in out.stderr


@pytest.mark.security
def test_private_key_readable_through_the_apps_own_group_is_fine(prod_env, monkeypatch, tmp_path):
    key = write_key(tmp_path / "group.pem")
    key.chmod(0o640)  # DEPLOY.md: root:ipv 0640, read by the app through its group
    monkeypatch.setenv("PRIVATE_KEY_FILE", str(key))
    assert [p for p in check_config(load_settings()) if p.setting == "PRIVATE_KEY_FILE"] == []


@pytest.mark.security
def test_check_config_refuses_the_demo_on_a_non_loopback_gunicorn_bind(prod_env):
    env = {**prod_env, "IPV_MODE": "demo", "IPV_DEPLOYMENT": "sandbox", "GUNICORN_BIND": "0.0.0.0:8000"}
    out = _run([str(FLASK), "--app", "smart_app", "check-config"], env, ROOT)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "ERROR: IPV_MODE: demo on 0.0.0.0:8000 (GUNICORN_BIND)" in out.stdout
    out = _run([str(FLASK), "--app", "smart_app", "check-config"], {**env, "GUNICORN_BIND": "127.0.0.1:8000"}, ROOT)
    assert "IPV_MODE: demo on" not in out.stdout
