"""The image's user (uid and gid 10001) meets the folders the kit gives it: the app, run as that user, either works
or stops at start-up naming the folder, its owner and mode, never a bare PermissionError (a key folder mounted
with the host's group, a root-owned metrics tmpfs: every request answered 500 before).

Run here as uid 10001 with setpriv in the repository's venv (the image-like file system under a read-only root is
tests/ops/test_image_filesystem.py's); needs root, as a container runtime does."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

pytestmark = pytest.mark.ops

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
IMAGE_IDS = 10001
HOST_GROUP = 4242  # some other group of the host: what the key folder had before DEPLOY.md fixed the ids


def _as_image_user(args: list[str], env: dict[str, str], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or not setpriv:
        pytest.skip("needs root and setpriv (util-linux) to run as uid 10001")
    return subprocess.run([setpriv, f"--reuid={IMAGE_IDS}", f"--regid={IMAGE_IDS}", "--clear-groups", *args],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=180)


@pytest.fixture
def host() -> Iterator[Path]:
    """A folder uid 10001 may enter (pytest's own tmp folders are 0700 root)."""
    base = Path(tempfile.mkdtemp(prefix="ipv-kit-"))
    base.chmod(0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _env(base: Path, **extra: str) -> dict[str, str]:
    return {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(base), "PYTHONPATH": str(ROOT), "LANG": "C.UTF-8",
            "SECRET_KEY": "k" * 48, "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
            "DATABASE_URL": f"sqlite:///{base / 'app.db'}", **extra}


def _site_folder(base: Path) -> tuple[Path, Path, Path]:
    """/etc/ipv-screen as DEPLOY.md 3 makes it, mounted from the host: folder root:group 0750, key 0640."""
    site = base / "etc-ipv-screen"
    site.mkdir()
    deployment = site / "epic.yaml"
    deployment.write_text((ROOT / "config" / "deployments" / "epic.yaml").read_text())
    key = site / "epic-private.pem"
    key.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    for path, mode in ((deployment, 0o640), (key, 0o640), (site, 0o750)):
        os.chown(path, 0, HOST_GROUP)
        path.chmod(mode)
    return site, deployment, key


def test_an_unreadable_key_folder_is_named_by_check_config(host):
    site, deployment, key = _site_folder(host)
    env = _env(host, IPV_DEPLOYMENT=str(deployment), PRIVATE_KEY_FILE=str(key))
    out = _as_image_user([str(BIN / "flask"), "--app", "smart_app", "check-config"], env)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "Traceback" not in text and "PermissionError" not in text, text
    assert (f"folder {site} (owner 0:{HOST_GROUP}, mode 0750) cannot be entered by this process "
            f"(uid {IMAGE_IDS}, groups {IMAGE_IDS})") in text, text
    # DEPLOY.md's ids: the host's ipv group is gid 10001, the image's too.
    for path in (site, deployment, key):
        os.chown(path, 0, IMAGE_IDS)
    out = _as_image_user([str(BIN / "flask"), "--app", "smart_app", "check-config"], env)
    text = out.stdout + out.stderr
    assert "cannot be entered" not in text and "cannot be read" not in text, text
    assert "client_id" in text  # the copied example's placeholders are what is left


_SERVE = """
from smart_app import create_app
app = create_app()
for _ in range(3):
    status = app.test_client().get("/healthz", headers={"Host": "127.0.0.1"}).status_code
print("healthz", status)
"""


def test_a_metrics_folder_the_user_cannot_write_stops_start_up_naming_it(host):
    """compose's first tmpfs for PROMETHEUS_MULTIPROC_DIR was root's: every request counted itself there and
    answered 500. Now the start stops (in every mode), naming the folder; owned by 10001 (compose's volume
    options, the units' RuntimeDirectory) the app serves and counts into it."""
    metrics = host / "ipv-metrics"
    metrics.mkdir(mode=0o755)  # a tmpfs as a runtime makes it without uid=: root's, 0755
    env = _env(host, IPV_MODE="test", PROMETHEUS_MULTIPROC_DIR=str(metrics))
    os.chown(host, IMAGE_IDS, IMAGE_IDS)  # the sqlite file's folder
    out = _as_image_user([str(BIN / "python"), "-c", _SERVE], env)
    assert out.returncode != 0 and "healthz" not in out.stdout
    assert "ConfigError" in out.stderr and "PermissionError" not in out.stderr, out.stderr[-3000:]
    assert (f"PROMETHEUS_MULTIPROC_DIR: folder {metrics} (owner 0:0, mode 0755) is not writable by this process "
            f"(uid {IMAGE_IDS}, groups {IMAGE_IDS})") in out.stderr, out.stderr[-3000:]

    os.chown(metrics, IMAGE_IDS, IMAGE_IDS)
    metrics.chmod(0o700)
    out = _as_image_user([str(BIN / "python"), "-c", _SERVE], env)
    assert out.returncode == 0 and out.stdout.strip().endswith("healthz 200"), out.stderr[-3000:]
    assert any(p.name.startswith("counter_") for p in metrics.iterdir())


_COMPILED = """
import sys
from smart_app import create_app
from smart_app.ops import templating
app = create_app({"TESTING": True, "WARM_UP": False, "DATABASE_URL": "sqlite://", "TEMPLATE_CACHE_DIR": sys.argv[1]})
templating.run_mode = lambda settings, testing=False: "production"
cache = templating.compiled_templates_for(app)
if cache is None:
    print("compiled refused")
else:
    app.jinja_env.bytecode_cache = cache
    app.jinja_env.cache.clear()
    names = templating.page_templates(app.jinja_env)
    for name in names:
        app.jinja_env.get_template(name)
    print("compiled", cache.loaded, len(names), cache.may_write)
"""


def test_production_loads_templates_compiled_by_root_and_refuses_a_folder_it_may_change(host):
    """The image's build compiles the page templates as root; the app, as uid 10001, loads their code and can change
    none of it. A folder, or one file in it, the app's user could write is code anyone with its rights could have
    put there: not loaded, every template compiled at start instead."""
    from smart_app import create_app
    from smart_app.ops import templating
    from tests.conftest import app_config

    folder = host / "ipv-templates"
    builder = create_app(app_config(f"sqlite:///{host / 'b.db'}"))
    count = templating.compile_into(builder.jinja_env, folder)
    builder.extensions["db_engine"].dispose()
    env = _env(host, IPV_MODE="test")
    run = [str(BIN / "python"), "-c", _COMPILED, str(folder)]
    out = _as_image_user(run, env)
    assert out.stdout.strip().endswith(f"compiled {count} {count} False"), out.stderr[-3000:]

    one = next(folder.iterdir())
    os.chown(one, IMAGE_IDS, IMAGE_IDS)
    out = _as_image_user(run, env)
    assert out.stdout.strip().endswith("compiled refused"), out.stderr[-3000:]
    assert f"compiled page templates in {folder} not used: this process may write there" in out.stderr
    os.chown(one, 0, 0)
    os.chown(folder, IMAGE_IDS, IMAGE_IDS)
    out = _as_image_user(run, env)
    assert out.stdout.strip().endswith("compiled refused"), out.stderr[-3000:]
