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


def stages() -> dict[str, str]:
    """The Containerfile's stages by their ``AS`` name, the last (unnamed) as "final": each its FROM line on."""
    out = {}
    for chunk in CONTAINERFILE.split("\nFROM ")[1:]:
        named = re.search(r"\sAS\s+(\S+)\s*$", chunk.split("\n", 1)[0])
        out[named.group(1) if named else "final"] = chunk
    return out


def _build_stage_sources() -> list[str]:
    """What the Containerfile's build stage copies from the build context."""
    return [part for line in stages()["build"].splitlines() if line.startswith("COPY ")
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
    # The image's template step, from outside the repository and without the sandbox: the venv's own folder.
    out = _run([str(flask), "--app", "smart_app:create_build_app", "compile-templates"], work, env)
    compiled = env_dir / "var" / "ipv-templates"
    assert f"compiled into {compiled}" in out.stdout and len(list(compiled.glob("*.jinja"))) > 40, out.stdout
    out = _run([str(flask), "--app", "smart_app", "check-config"], work,
               {**env, "IPV_DEPLOYMENT": "sandbox",
                "DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}"}, ok=False)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "the deployment named 'sandbox'" in out.stdout and "PRIVATE_KEY_FILE" in out.stdout


def test_image_runs_as_a_user_and_installs_the_lock_then_the_wheel():
    final = stages()["final"]
    user = re.findall(r"^USER\s+(\S+)", final, re.M)
    assert user and user[-1] not in ("root", "0")
    lock = re.search(r"^COPY requirements/runtime\.lock (\S+)$", final, re.M)
    assert lock, "the final stage copies the runtime lock"
    assert f"pip install --no-cache-dir --require-hashes -r {lock.group(1)}" in final
    assert "--no-index --no-deps /wheels/ipv_smart_screen-*.whl" in final and "pip check" in final
    build = stages()["build"]
    assert "--require-hashes -r requirements/build-system.lock" in build and "--no-deps --no-build-isolation" in build
    assert list(stages()) == ["build", "audio", "final"]  # multi-stage
    assert 'import sandbox_ehr' in final and "PRIVATE KEY" in final  # the image checks itself too


def test_the_image_compiles_the_page_templates_as_root_after_installing_the_wheel():
    """Root's folder (smart_app/ops/templating.py): the app, another user, loads the code and cannot change it."""
    final = stages()["final"]
    step = final.index("RUN /opt/ipv/bin/flask --app smart_app:create_build_app compile-templates")
    assert final.index("--no-index --no-deps /wheels/ipv_smart_screen-*.whl") < step < final.index("\nUSER ipv")


def test_the_tablet_audio_is_made_in_its_own_stage_and_only_its_files_reach_the_image():
    """espeak-ng reads the wheel's texts in the audio stage; the final stage copies the audio folder alone, into the
    installed package where smart_app/kiosk/audio.py looks (the venv's path holds the base image's Python)."""
    audio, final = stages()["audio"], stages()["final"]
    assert "apt-get install -y --no-install-recommends espeak-ng" in audio and "python -m smart_app.kiosk" in audio
    assert "--require-hashes -r /tmp/runtime.lock" in audio and "COPY --from=build /wheels /wheels" in audio
    assert "espeak" not in final.lower()
    python = re.match(r"\S+/python:(\d+\.\d+)-", final).group(1)
    folder = f"/opt/ipv/lib/python{python}/site-packages/smart_app/kiosk/static/audio"
    copies = re.findall(r"^COPY --from=audio (\S+) (\S+)$", final, re.M)
    assert copies == [(folder, folder)], copies
    assert "python -m venv /opt/ipv" in audio and re.match(r"\S+/python:" + re.escape(python) + "-", audio)


def test_compose_migrates_before_the_app_and_worker():
    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"db", "migrate", "app1", "app2", "worker"} <= set(services)
    migrate = " ".join(services["migrate"]["command"])
    assert "check-config" in migrate and "flask --app smart_app db upgrade" in migrate
    for name in ("app1", "app2", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert "outbox-worker" in " ".join(services["worker"]["command"])
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


# -- DEPLOY.md and the kit, as a hospital-IT engineer met them on a bare Debian 12 host --------------------------
GUIDE = (ROOT / "DEPLOY.md").read_text()
ENV_EXAMPLE = ROOT / "deploy" / "ipv.env.example"


def _compose() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())


def _code_lines(text: str) -> list[str]:
    """The guide's command lines: its indented blocks, as typed."""
    return [line.strip() for line in text.splitlines() if line.startswith("    ")]


def _section(title: str) -> str:
    start = GUIDE.index(f"## {title}")
    end = GUIDE.find("\n## ", start + 1)
    return GUIDE[start:end if end > 0 else None]


@pytest.mark.ops
def test_guide_uses_no_sudo_a_bare_debian_host_lacks():
    """sudo is not installed on a bare Debian host; runuser (util-linux) always is."""
    commands = [line.split("#", 1)[0] for line in _code_lines(GUIDE)] + re.findall(r"`([^`]+)`", GUIDE)
    assert not [c for c in commands if re.search(r"(^|[\s(;&])sudo\s", c)]
    assert "runuser -u postgres -- createuser ipv_owner --pwprompt" in _code_lines(GUIDE)
    assert "cd /srv/ipv && runuser -u ipv -- /opt/ipv/bin/flask --app smart_app check-config --online" in \
        _code_lines(GUIDE)


@pytest.mark.ops
def test_guide_installs_every_command_it_uses():
    """curl (the /readyz and /metrics probes) is not on a bare host; `python` is not Debian's name for python3 and
    has no cryptography: the env example's key commands use the app's own interpreter."""
    install = next(line for line in _code_lines(GUIDE) if line.startswith("apt-get update && apt-get install"))
    assert {"python3-venv", "nginx", "postgresql", "redis-server", "curl"} <= set(install.split())
    example = ENV_EXAMPLE.read_text()
    assert not re.search(r"^#\s*python\s", example, re.M)
    assert "# /opt/ipv/bin/python -c 'from cryptography.fernet import Fernet" in example


@pytest.mark.ops
def test_backups_go_to_a_folder_the_guide_makes_and_only_postgres_reads():
    lines = _code_lines(_section("7. Backup and restore"))
    assert "install -d -m 0700 -o postgres -g postgres /var/backups/ipv   # once" in lines
    dump = next(line for line in lines if "pg_dump" in line)
    assert "umask 077 && pg_dump --format=custom --file=/var/backups/ipv/ipv-$(date +%F).dump ipv" in dump
    assert dump.startswith("cd /tmp && runuser -u postgres -- sh -c '")


@pytest.mark.ops
def test_restore_starts_the_worker_only_after_the_chart_check():
    section = _section("7. Backup and restore")
    restore = section[section.index("systemctl stop ipv-app@8001"):]
    block, after = restore.split("\n\n", 1)
    assert "ipv-worker" not in block.split("\n", 1)[1]  # stopped first, not started in the block
    assert "check the chart" in after and after.index("check the chart") < after.index("systemctl start ipv-worker")


@pytest.mark.ops
def test_signing_key_promotion_changes_key_id_with_the_key_file():
    rotation = _section("8. Key rotation")
    promotion = rotation[rotation.index("Client signing key"):rotation.index("`SECRET_KEY`")]
    assert "`PRIVATE_KEY_FILE` in `ipv.env` names the next key's file" in promotion
    assert "`key_id` takes the value of `next_key_id`" in promotion


def _env_lines() -> dict[str, str]:
    return dict(line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
                if line and not line.startswith("#"))


@pytest.mark.ops
def test_env_example_reads_the_same_in_a_shell_python_dotenv_and_podman(tmp_path):
    """FRAME_ANCESTORS='self' https://… ran `https://…` as a command when sourced (DEPLOY.md 3.4) and python-dotenv
    could not parse it. Now: bash, python-dotenv and the literal value podman's --env-file passes all give the
    app the same frame-ancestors."""
    from dotenv import dotenv_values

    from config.settings import EnvironmentFields

    wanted = "'self' https://ehr.example-health.org"
    shell = subprocess.run(["bash", "-c", f'set -e; set -a; . "{ENV_EXAMPLE}"; set +a; printf %s "$FRAME_ANCESTORS"'],
                           capture_output=True, text=True, timeout=30)
    assert shell.returncode == 0 and shell.stderr == "", shell.stderr
    assert shell.stdout == wanted
    assert dotenv_values(ENV_EXAMPLE)["FRAME_ANCESTORS"] == wanted
    literal = _env_lines()["FRAME_ANCESTORS"]  # podman keeps the quotes
    assert EnvironmentFields(frame_ancestors=literal).frame_ancestors == wanted
    assert EnvironmentFields(frame_ancestors=wanted).frame_ancestors == wanted


@pytest.mark.ops
def test_env_example_names_the_same_paths_on_the_host_and_in_the_containers():
    env = _env_lines()
    for name in ("IPV_DEPLOYMENT", "PRIVATE_KEY_FILE"):
        assert env[name].startswith("/etc/ipv-screen/") and "/site/" not in env[name], env[name]
    app = _compose()["services"]["app1"]
    assert "/etc/ipv-screen:/etc/ipv-screen:ro" in app["volumes"]
    assert app["env_file"] == "/etc/ipv-screen/ipv.env"
    for unit in ("ipv-app@.service", "ipv-worker.service", "ipv-migrate.service"):
        assert "EnvironmentFile=/etc/ipv-screen/ipv.env" in (ROOT / "deploy" / "systemd" / unit).read_text()
    final = CONTAINERFILE.split("\nFROM ", 2)[2]
    assert "/etc/ipv-screen" not in re.findall(r"^COPY .*$", final, re.M)[-1]  # nothing baked under the mount


@pytest.mark.ops
def test_compose_waits_for_the_schema_itself_since_podman_compose_ignores_conditions():
    services = _compose()["services"]
    for name in ("app1", "app2", "worker"):
        command = services[name]["command"]
        assert command[:2] == ["sh", "-c"] and command[2].startswith("flask --app smart_app db wait && exec "), name
    assert any(line.startswith("podman-compose -f deploy/compose.yaml run --rm migrate") for line in _code_lines(GUIDE))
    # Debian 12's podman 4.3 has no compose subcommand
    assert not [line for line in _code_lines(GUIDE) if line.startswith("podman compose")]


@pytest.mark.ops
def test_the_healthcheck_survives_podmans_oci_format():
    """podman builds OCI images by default, which drop HEALTHCHECK: the guide builds the docker format, and compose
    has the same check for the app services."""
    assert any(line.startswith("podman build --format docker -t ipv-screen -f Containerfile .")
               for line in _code_lines(GUIDE))
    image_check = re.search(r"^HEALTHCHECK .* CMD (.*)$", CONTAINERFILE, re.M).group(1)
    services = _compose()["services"]
    for name in ("app1", "app2"):
        test = services[name]["healthcheck"]["test"]
        assert test[0] == "CMD" and " ".join(test[1:3]) + ' "' + test[3] + '"' == image_check
    assert services["worker"]["healthcheck"] == {"disable": True}


@pytest.mark.ops
def test_compose_gives_the_unprivileged_user_what_it_writes():
    """The multiprocess metrics folder was a root-owned tmpfs (every request failed); it is now one tmpfs volume
    owned by uid 10001 that the app instances and the worker share; /tmp is writable on the read-only root;
    rate limits go to the compose file's own Redis."""
    compose = _compose()
    opts = compose["volumes"]["metrics"]["driver_opts"]
    assert opts["type"] == "tmpfs" and set(opts["o"].split(",")) == {"uid=10001", "gid=10001", "mode=0700"}
    for name in ("app1", "app2", "worker"):
        service = compose["services"][name]
        assert service["user"] == "10001:10001" and service["read_only"] is True
        assert "metrics:/run/ipv-metrics" in service["volumes"] and "/tmp:mode=1777" in service["tmpfs"]
        assert service["environment"]["PROMETHEUS_MULTIPROC_DIR"] == "/run/ipv-metrics"
        assert service["environment"]["RATELIMIT_STORAGE_URI"] == "redis://redis:6379/3"
    assert "redis" in compose["services"]
    final = CONTAINERFILE.split("\nFROM ", 2)[2]
    assert "groupadd --system --gid 10001 ipv" in final and "useradd --system --uid 10001 --gid 10001" in final
    assert "groupadd --system --gid 10001 ipv" in " ".join(_code_lines(GUIDE))  # the host's ipv, the same ids


@pytest.mark.ops
def test_units_share_one_metrics_folder_with_the_worker():
    units = ROOT / "deploy" / "systemd"
    for name in ("ipv-app@.service", "ipv-worker.service"):
        text = (units / name).read_text()
        assert "Environment=PROMETHEUS_MULTIPROC_DIR=/run/ipv-metrics" in text
        assert "RuntimeDirectory=ipv-metrics\n" in text and "RuntimeDirectoryPreserve=yes" in text


@pytest.mark.ops
def test_nginx_sends_the_public_host_to_every_location():
    """/metrics had no proxy_set_header, so nginx sent Host: ipv_app and the app answered 400 (its trusted hosts):
    the headers are set once for the server and no location sets its own (which would drop them all)."""
    site = (ROOT / "deploy" / "nginx-ipv.conf").read_text()
    tls_server = site[site.index("listen 443 ssl;"):]
    tls_server = tls_server[:tls_server.index("\n}")]
    locations = re.findall(r"^\s*location\s+(\S+)\s*\{([^}]*)\}", tls_server, re.M)
    assert {path for path, _ in locations} == {"/", "/metrics"}
    assert all("proxy_set_header" not in body for _, body in locations)
    assert re.search(r"^    proxy_set_header Host \$host;$", tls_server, re.M)
