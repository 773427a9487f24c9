"""The image's file system, built the way the Containerfile builds it, runs the app as uid 10001 on a read-only root
with deploy/compose.yaml's mounts: the host's /etc/ipv-screen (root:ipv 0750, ipv = gid 10001 as DEPLOY.md makes
it), the shared metrics tmpfs with its uid and mode, /tmp. The migrate, app and worker services' own commands run in
production mode; the compose healthcheck passes; /metrics shows the app's and the worker's counters; the tablet's
"Listen" audio, made by espeak-ng in the audio stage, is all there and served, and espeak-ng is not.

No container runtime runs here (podman needs one), so this is a container by hand: each stage after the build stage
(the audio stage, then the final one) runs its RUN lines in a chroot of its own copy of a Debian bookworm base
(``debootstrap --variant=minbase bookworm DIR``, then ``chroot DIR apt-get install -y --no-install-recommends
python3 python3-venv ca-certificates`` and ``ln -s /usr/bin/python3 DIR/usr/local/bin/python``, the python image's
name for it), its COPY lines copy from the repository (the wheel from the build stage's recipe,
tests/test_deploy_kit.py) or from the earlier stage's root, then the services run in their own mount, network and
process namespaces under ``chroot --userspec=10001:10001``. Set IPV_IMAGE_BASE to that folder; needs root (as a
rootful runtime does), PostgreSQL on a local socket and redis-server. The pip steps download the lock's packages,
the audio stage Debian's espeak-ng."""

from __future__ import annotations

import os
import re
import secrets
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from cryptography.fernet import Fernet

from tests.test_deploy_kit import ROOT, stages, wheel  # noqa: F401 (the build stage's wheel, a fixture)

pytestmark = [pytest.mark.ops, pytest.mark.postgres, pytest.mark.slow]

IDS = "10001:10001"
HOST = "ipv.example-health.org"
SOCKET_DIR = "/var/run/postgresql"  # the host's; /run/postgresql in the image (its /var/run is a link to /run)
IMAGE_SOCKET_DIR = "/run/postgresql"


def _instructions(name: str) -> list[tuple[str, str]]:
    """A stage's instructions after its FROM, continuation lines joined, comments dropped."""
    stage = stages()[name].split("\n", 1)[1]
    out = []
    for line in re.sub(r"\\\n", " ", stage).splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _chroot_run(root: Path, command: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = (f"mount --rbind /dev {root}/dev && mount -t proc proc {root}/proc && "
              f"exec chroot {root} /usr/bin/env -i {' '.join(shlex.quote(f'{k}={v}') for k, v in env.items())} "
              f"/bin/sh -c {shlex.quote(command)}")
    return subprocess.run(["unshare", "--mount", "--fork", "sh", "-c", script], capture_output=True, text=True,
                          timeout=1200)


def build_stage(name: str, base: Path, root: Path, wheel_file: Path, built: dict[str, Path]) -> dict[str, object]:
    """One stage on ``base`` in ``root`` (``built``: the roots of the stages made before it): returns its USER,
    WORKDIR, ENV and CMD."""
    subprocess.run(["cp", "-a", f"{base}/.", str(root)], check=True, timeout=600)
    shutil.copy2("/etc/resolv.conf", root / "etc" / "resolv.conf")  # what a build container is given
    image: dict[str, object] = {"env": {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}}
    env: dict[str, str] = image["env"]  # type: ignore[assignment]
    # The build host's trust store for pip's downloads (a proxy's CA where there is one), outside the image's.
    build_ca = root / "tmp" / "build-ca.crt"
    shutil.copy2(os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt", build_ca)
    for word, rest in _instructions(name):
        if word == "RUN":
            done = _chroot_run(root, rest, {**env, "HOME": "/root", "PIP_CERT": "/tmp/build-ca.crt"})
            assert done.returncode == 0, f"RUN {rest[:200]}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        elif word == "COPY":
            parts = rest.split()
            if parts[0] == "--from=build":
                assert parts[1:] == ["/wheels", "/wheels"], parts
                (root / "wheels").mkdir()
                shutil.copy2(wheel_file, root / "wheels" / wheel_file.name)
            elif parts[0].startswith("--from="):
                source, target = built[parts[0].removeprefix("--from=")] / parts[1].lstrip("/"), parts[2]
                assert source.is_dir(), f"COPY {rest}: no {source}"
                target_dir = root / target.lstrip("/")
                assert target_dir.parent.is_dir(), f"COPY {rest}: {target_dir.parent} is not in this stage"
                shutil.copytree(source, target_dir, symlinks=True)
            else:
                src, target = parts[0], root / parts[1].lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / src, target)
        elif word == "ENV":
            for pair in shlex.split(rest):
                key, value = pair.split("=", 1)
                env[key] = value.replace("$PATH", env["PATH"])
        elif word in ("USER", "WORKDIR", "CMD", "HEALTHCHECK", "EXPOSE"):
            image[word] = rest
        else:
            raise AssertionError(f"this test does not know {word}: teach it")
    build_ca.unlink()
    return image


def build_image(base: Path, root: Path, wheel_file: Path) -> dict[str, object]:
    """Every stage after the build stage (whose wheel is the fixture's), the final one in ``root``; the others'
    roots are removed once it is built. Returns the final stage's USER, WORKDIR, ENV and CMD."""
    built: dict[str, Path] = {}
    for name in [n for n in stages() if n not in ("build", "final")]:
        built[name] = root.parent / f"stage-{name}"
        built[name].mkdir()
        build_stage(name, base, built[name], wheel_file, built)
    image = build_stage("final", base, root, wheel_file, built)
    for stage_root in built.values():
        shutil.rmtree(stage_root)
    return image


def _env_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines as podman's --env-file reads them (quotes kept)."""
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def _site(folder: Path) -> tuple[Path, dict[str, str]]:
    """The host's /etc/ipv-screen as DEPLOY.md 2-3 make it: root:ipv 0750, a filled-in Epic deployment, its key
    and ipv.env 0640 root:ipv, ipv being gid 10001."""
    folder.mkdir()
    deployment = yaml.safe_load((ROOT / "config" / "deployments" / "epic.yaml").read_text())
    deployment.update(client_id="ipv-screen-kit", allowed_iss=["https://fhir.stmarys-health.org/api/FHIR/R4"],
                      restricted_note_type={"system": "urn:oid:1.2.3.4", "code": "sw", "display": "Social work"},
                      tuning={"trusted_hosts": [HOST]})
    (folder / "epic.yaml").write_text(yaml.safe_dump(deployment))
    key = subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
                         capture_output=True, check=True, timeout=60).stdout
    (folder / "epic-private.pem").write_bytes(key)
    example = (ROOT / "deploy" / "ipv.env.example").read_text()
    filled = {"SECRET_KEY": secrets.token_urlsafe(48), "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
              "METRICS_TOKEN": secrets.token_urlsafe(32)}
    for name, value in filled.items():
        example = example.replace(f"\n{name}=\n", f"\n{name}={value}\n")
    (folder / "ipv.env").write_text(example)
    for path, mode in ((folder / "epic.yaml", 0o640), (folder / "epic-private.pem", 0o640),
                       (folder / "ipv.env", 0o640), (folder, 0o750)):
        os.chown(path, 0, 10001)
        path.chmod(mode)
    return folder, _env_file(example)


@pytest.mark.image
def test_the_image_runs_as_uid_10001_on_a_read_only_root_with_the_compose_mounts(tmp_path, wheel, postgres_url):  # noqa: F811
    base = os.environ["IPV_IMAGE_BASE"]  # selected only when it is set (tests/conftest.py)
    if os.geteuid() != 0 or not shutil.which("redis-server") or not Path(SOCKET_DIR).is_dir():
        pytest.fail("needs root, redis-server and PostgreSQL's socket in " + SOCKET_DIR)
    tmp_path.chmod(0o755)
    root = tmp_path / "image"
    root.mkdir()
    image = build_image(Path(base), root, wheel)
    assert image["USER"] == "ipv" and image["WORKDIR"] == "/srv/ipv"
    assert (root / "etc" / "passwd").read_text().count("ipv:x:10001:10001:") == 1
    # The tablet's audio came from the audio stage; espeak-ng (program, library, voice data) stayed there.
    assert [p for p in root.rglob("*espeak*")] == []

    compose = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    site, env_file = _site(tmp_path / "etc-ipv-screen")
    # The compose network's names are this namespace's loopback (redis) and PostgreSQL's socket (db).
    database = postgres_url.replace("@127.0.0.1:5432/", "@/", 1) + f"&host={IMAGE_SOCKET_DIR}"

    def service_env(name: str) -> dict[str, str]:
        env = {**image["env"], **env_file, **services[name]["environment"]}  # type: ignore[dict-item]
        return {**env, "DATABASE_URL": database, "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379/3"}

    app = services["app1"]
    assert app["read_only"] is True and app["user"] == IDS
    mounts = [f"mount --bind {root} {root}"]
    for volume in app["volumes"]:
        source, target, *_ = volume.split(":")
        mounts.append(f"mkdir -p {root}{target}")  # mount points, as a runtime makes them before the root is ro
    mounts.append(f"mkdir -p {root}{IMAGE_SOCKET_DIR}")
    mounts.append(f"mount -o remount,bind,ro {root}")
    mounts += [f"mount --rbind /dev {root}/dev", f"mount -t proc proc {root}/proc",
               f"mount --bind {SOCKET_DIR} {root}{IMAGE_SOCKET_DIR}"]
    for volume in app["volumes"]:
        source, target, *flags = volume.split(":")
        if source.startswith("/"):
            assert source == "/etc/ipv-screen" and flags == ["ro"]
            mounts += [f"mount --bind {site} {root}{target}", f"mount -o remount,bind,ro {root}{target}"]
        else:
            opts = compose["volumes"][source]["driver_opts"]
            mounts.append(f"mount -t {opts['type']} -o {opts['o']} {opts['device']} {root}{target}")
    for tmpfs in app["tmpfs"]:
        target, opts = tmpfs.split(":", 1)
        mounts.append(f"mount -t tmpfs -o {opts} tmpfs {root}{target}")

    def as_service(name: str, command: list[str]) -> str:
        env = " ".join(shlex.quote(f"{k}={v}") for k, v in service_env(name).items())
        inner = f"cd {image['WORKDIR']} && exec {shlex.join(command)}"
        return f"chroot --userspec={IDS} --groups=10001 {root} /usr/bin/env -i {env} /bin/sh -c {shlex.quote(inner)}"

    health = app["healthcheck"]["test"]
    assert health[0] == "CMD"
    scrape = ("import os,urllib.request as u; r=u.urlopen(u.Request('http://127.0.0.1:8000/metrics', headers={"
              f"'Host': '{HOST}', 'Authorization': 'Bearer ' + os.environ['METRICS_TOKEN']}}), timeout=5); "
              "print(r.read().decode())")
    # Every file the tablet can ask for is in the installed package, readable by the app, and served.
    listen = ("import urllib.request as u; from fhir.questionnaires import load_instruments; "
              "from smart_app.kiosk import audio; files = sorted(audio.wanted(load_instruments().values())); "
              "missing = [p for p in files if not p.is_file()]; "
              "r = u.urlopen(u.Request('http://127.0.0.1:8000/tablet/static/audio/' + files[0].name, headers={"
              f"'Host': '{HOST}'}}), timeout=5); print('audio', len(files), len(missing), r.status, r.read(4))")
    script = "\n".join([
        "set -e", "ip link set lo up", *mounts,
        "redis-server --port 6379 --bind 127.0.0.1 --save '' --daemonize yes >/dev/null",
        f"{as_service('migrate', services['migrate']['command'])}",
        f"{as_service('worker', services['worker']['command'])} > {tmp_path}/worker.log 2>&1 &",
        f"{as_service('app1', app['command'])} > {tmp_path}/app.log 2>&1 &",
        "ok=0; for i in $(seq 1 300); do",
        f"  if {as_service('app1', health[1:])} 2>/dev/null; then ok=1; break; fi; sleep 0.2",
        "done",
        'echo "healthcheck=$ok"',
        "for i in $(seq 1 100); do",
        f"  {as_service('app1', ['python', '-c', scrape])} > {tmp_path}/metrics.txt",
        f"  grep -q ipv_outbox_rounds_total {tmp_path}/metrics.txt && break; sleep 0.2",
        "done",
        f"{as_service('app1', ['python', '-c', listen])}",
        f"if {as_service('app1', ['sh', '-c', 'touch /opt/ipv/written'])} 2>/dev/null; then echo root=rw;"
        " else echo root=ro; fi",
        f"ls -ln {root}/run/ipv-metrics | tail -n +2 | awk '{{print \"metrics-file\", $3\":\"$4}}' | sort -u",
    ])
    run = subprocess.run(["unshare", "--mount", "--net", "--pid", "--fork", "bash", "-c", script],
                         capture_output=True, text=True, timeout=900)
    logs = "\n".join(f"--- {n}\n{(tmp_path / n).read_text(errors='replace')[-3000:]}"
                     for n in ("app.log", "worker.log") if (tmp_path / n).exists())
    report = run.stdout + run.stderr + logs
    assert run.returncode == 0, report[-8000:]
    assert "healthcheck=1" in run.stdout, report[-8000:]
    assert "root=ro" in run.stdout and "metrics-file 10001:10001" in run.stdout, report[-8000:]
    heard = re.search(r"^audio (\d+) (\d+) (\d+) (\S+)$", run.stdout, re.M)
    assert heard and int(heard.group(1)) > 0 and heard.groups()[1:] == ("0", "200", "b'RIFF'"), report[-8000:]
    metrics = (tmp_path / "metrics.txt").read_text()
    assert 'ipv_http_requests_total{method="GET",route="/healthz",status="200"}' in metrics, metrics[-3000:]
    assert "ipv_outbox_rounds_total{" in metrics, metrics[-3000:]
    assert "PermissionError" not in logs, logs
    # The page templates compiled by the build (root's folder) are what the app, uid 10001, loaded at start.
    warmed = re.search(r"(\d+) templates, (\d+) of them loaded compiled ahead", (tmp_path / "app.log").read_text())
    assert warmed and warmed.group(1) == warmed.group(2) != "0", logs
