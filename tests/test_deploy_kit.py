"""The deployment kit (Containerfile, deploy/compose.yaml, deploy/systemd/, DEPLOY.md).

No container runtime runs on the development machine, so the image itself is not built here. What is checked:
the wheel the image installs, built from exactly what the Containerfile copies, holds no sandbox code or keys;
the image's install step (pip install of that wheel into a clean venv) gives an app that refuses the sandbox
deployment; the compose file and units migrate before the app and the worker start, as non-root.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONTAINERFILE = (ROOT / "Containerfile").read_text()
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "instance", "*.egg-info", "build")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, ok: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if ok:
        assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _build_stage_sources() -> list[str]:
    """What the Containerfile's build stage copies from the build context."""
    build = CONTAINERFILE.split("\nFROM ", 2)[1]
    return [part for line in build.splitlines() if line.startswith("COPY ")
            for part in line.split()[1:-1] if not part.startswith("--")]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built (pip wheel, as the Containerfile does) from only what the build stage copies."""
    src = tmp_path_factory.mktemp("image-src")
    for name in _build_stage_sources():
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=IGNORE)
        else:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / name)
    dist = tmp_path_factory.mktemp("dist")
    # As the build stage: no build isolation, so the setuptools pinned by the lock builds it (dev.lock holds
    # build-system.lock's pins; tests/test_lock.py).
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dist),
          str(src)], cwd=src)
    (found,) = dist.glob("ipv_smart_screen-*.whl")
    return found


def test_the_image_copies_no_sandbox_and_no_tests():
    assert _build_stage_sources() == ["requirements/build-system.lock", "pyproject.toml", "README.md", "smart_app",
                                      "fhir", "referrals", "config"]
    assert not re.search(r"^COPY\s+\.\s", CONTAINERFILE, re.M)  # never the whole context


def test_wheel_holds_no_sandbox_code_or_keys(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert not [n for n in names if n.startswith(("sandbox_ehr/", "tests/", "benchmarks/"))]
    assert not [n for n in names if n.endswith((".pem", ".key", ".p12", ".db"))]
    for needed in ("smart_app/__init__.py", "smart_app/ops/config_check.py", "config/checks.py",
                   "config/gunicorn.conf.py", "fhir/smart/oauth.py", "referrals/__init__.py"):
        assert needed in names, needed
    assert any(n.startswith("smart_app/store/migrations/") for n in names)  # `flask db upgrade` ships with it


@pytest.mark.slow
def test_image_install_step_in_a_clean_venv_refuses_the_sandbox(wheel, tmp_path):
    """The Containerfile's install steps into a venv without system packages (the hash-pinned runtime lock, then
    the wheel alone, then pip check): no sandbox module, no key file, and check-config refuses the sandbox
    deployment."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py, flask = env_dir / "bin" / "python", env_dir / "bin" / "flask"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    pip = [str(py), "-m", "pip", "install", "-q", "--no-input"]
    _run([*pip, "--require-hashes", "-r", str(ROOT / "requirements" / "runtime.lock")], cwd=tmp_path, env=env)
    _run([*pip, "--no-index", "--no-deps", str(wheel)], cwd=tmp_path, env=env)
    _run([str(py), "-m", "pip", "check"], cwd=tmp_path, env=env)  # the lock satisfies the wheel's requirements
    assert _run([str(py), "-c", "import zipcodes"], tmp_path, env, ok=False).returncode != 0  # a build tool only
    assert _run([str(py), "-c", "import sandbox_ehr"], tmp_path, env, ok=False).returncode != 0
    private = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")
    keys = [p for p in env_dir.rglob("*") if p.is_file() and p.suffix in (".pem", ".key")
            and private.search(p.read_bytes())]
    assert keys == []  # CA bundles (certifi's cacert.pem) are fine; no private key, the sandbox's or any
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = _run([str(flask), "--app", "smart_app", "check-config"], work,
               {**env, "IPV_DEPLOYMENT": "sandbox",
                "DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}, ok=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "the deployment named 'sandbox'" in out.stdout and "PRIVATE_KEY_FILE" in out.stdout


def test_image_runs_as_a_user_and_installs_the_lock_then_the_wheel():
    final = CONTAINERFILE.split("\nFROM ", 2)[2]
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert user and user[-1] not in ("root", "0")
    lock = re.search(r"^COPY requirements/runtime\.lock (\S+)$", final, re.M)
    assert lock, "the final stage copies the runtime lock"
    assert f"pip install --no-cache-dir --require-hashes -r {lock.group(1)}" in final
    assert "--no-index --no-deps /wheels/ipv_smart_screen-*.whl" in final and "pip check" in final
    build = CONTAINERFILE.split("\nFROM ", 2)[1]
    assert "--require-hashes -r requirements/build-system.lock" in build and "--no-deps --no-build-isolation" in build
    assert CONTAINERFILE.count("\nFROM ") == 2 and " AS build" in CONTAINERFILE  # multi-stage
    assert 'import sandbox_ehr' in final and "PRIVATE KEY" in final  # the image checks itself too


def test_compose_migrates_before_the_app_and_worker():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"db", "migrate", "app1", "app2", "worker"} <= set(services)
    migrate = " ".join(services["migrate"]["command"])
    assert "check-config" in migrate and "flask --app smart_app db upgrade" in migrate
    for name in ("app1", "app2", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "outbox-worker" in services["worker"]["command"]
    assert all("sandbox" not in str(v) for v in services.values())


def test_systemd_units_migrate_first():
    units = ROOT / "deploy" / "systemd"
    migrate = (units / "ipv-migrate.service").read_text()
    assert "check-config" in migrate and "db upgrade" in migrate and "Type=oneshot" in migrate
    for name in ("ipv-app@.service", "ipv-worker.service"):
        text = (units / name).read_text()
        assert "Requires=ipv-migrate.service" in text and "After=ipv-migrate.service" in text
        assert re.search(r"^User=ipv$", text, re.M)


def test_deploy_guide_covers_what_it_must():
    guide = (ROOT / "DEPLOY.md").read_text().lower()
    for topic in ("tls", "proxy", "workers", "timeout", "migrate", "/healthz", "/readyz", "metrics",
                  "key rotation", "backup", "restore", "log rotation", "retention", "no container runtime"):
        assert topic in guide, topic


def _heredoc_sql(text: str, start: str) -> str:
    """The SQL of the heredoc that follows ``start`` (``<<'SQL'`` ... ``SQL``), each line stripped of its indent."""
    block = text[text.index(start) + len(start):]
    block = block[: re.search(r"^\s*SQL$", block, re.M).start()]
    return "\n".join(line.strip() for line in block.strip("\n").splitlines())


@pytest.mark.ops
def test_compose_and_units_use_the_owner_role_only_to_migrate():
    """The app and the worker connect as the runtime role (only INSERT and SELECT on the access audit); the migration
    step as the owner role; the database container makes both roles with DEPLOY.md's own SQL."""
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    for name in ("app1", "app2", "worker"):
        assert services[name]["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://ipv:")
    assert services["migrate"]["environment"]["DATABASE_URL"].startswith("postgresql+psycopg://ipv_owner:")
    assert services["db"]["environment"].get("POSTGRES_USER") in (None, "postgres")  # never an app role
    assert any(v.endswith(":/docker-entrypoint-initdb.d:ro") for v in services["db"]["volumes"])
    init = (ROOT / "deploy" / "postgres-init" / "ipv-roles.sh").read_text()
    deploy = (ROOT / "DEPLOY.md").read_text()
    assert _heredoc_sql(init, "--dbname ipv <<'SQL'\n") == _heredoc_sql(deploy, "<<'SQL'\n")
    assert "CREATE DATABASE ipv OWNER ipv_owner" in init and "createdb -O ipv_owner ipv" in deploy
    units = ROOT / "deploy" / "systemd"
    assert "EnvironmentFile=/etc/ipv-screen/owner.env" in (units / "ipv-migrate.service").read_text()
    for name in ("ipv-app@.service", "ipv-worker.service"):
        assert "owner.env" not in (units / name).read_text()
