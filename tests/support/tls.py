"""Real TLS for tests: a throw-away CA (trustme), the sandbox EHR under werkzeug's TLS, the app as production
runs it (gunicorn with TLS, or gunicorn on a unix socket behind Debian's nginx terminating TLS), and the
outbox worker as its own process.

Two sites as the browser sees them: the EHR on ``https://localhost:<port>``, the app on
``https://127.0.0.1:<port>``. Every port is bound with port 0 (gunicorn receives the bound socket as
``fd://N``); nginx, which binds its own port, retries on a collision.

The app runs in production mode (no TESTING, no DEMO): its own deployment file and key registered with the
sandbox as a new client, strong secrets, https base URL, `flask db upgrade` before start. So the same
``config/checks.py`` that refuses unsafe starts passes this configuration.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import requests
import trustme
import yaml
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from werkzeug.serving import make_server

from config.ehrs import with_origin
from tests.support import tools

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CLIENT_ID = "ipv-screen-tls-test"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def spki_hash(cert_pem: bytes) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)): what Chromium's --ignore-certificate-errors-spki-list takes."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


@dataclass
class Issued:
    """A server certificate for one host name, written to files (for gunicorn and nginx)."""

    cert: trustme.LeafCert
    cert_file: Path
    key_file: Path

    @property
    def spki(self) -> str:
        return spki_hash(self.cert.cert_chain_pems[0].bytes())

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.cert.configure_cert(ctx)
        return ctx


class TestCA:
    """A CA made for this test session; ``ca_file`` is what servers calling each other trust."""

    __test__ = False

    def __init__(self, folder: Path):
        self.ca = trustme.CA(organization_name="IPV screen tests")
        self.folder = folder
        self.ca_file = folder / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))

    def issue(self, host: str) -> Issued:
        cert = self.ca.issue_cert(host)
        cert_file, key_file = self.folder / f"{host}.crt", self.folder / f"{host}.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        key_file.chmod(0o600)
        return Issued(cert, cert_file, key_file)


def bound_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(128)
    return sock


class TlsSandbox:
    """The sandbox EHR on https://localhost:<port> (werkzeug, threaded), knowing our test client."""

    def __init__(self, ca: TestCA, folder: Path, client_jwk: dict[str, Any]):
        from sandbox_ehr.app import create_sandbox_app

        issued = ca.issue("localhost")
        self.spki = issued.spki
        clients = folder / "clients.yaml"
        base = yaml.safe_load((ROOT / "sandbox_ehr" / "clients.yaml").read_text())
        scopes = base["defaults"]["scopes"]
        clients.write_text(yaml.safe_dump({"clients": {CLIENT_ID: {
            "name": "IPV screen (TLS test deployment)",
            "token_endpoint_auth_method": "private_key_jwt",
            "redirect_uris": ["https://127.0.0.1:*/callback"],
            "scopes": scopes,
            "jwks": {"keys": [client_jwk]},
        }}}))
        self.app = create_sandbox_app({"TESTING": True, "SANDBOX_DB": str(folder / "sandbox.db"),
                                       "SANDBOX_CLIENTS": str(clients)})
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True, ssl_context=issued.server_context())
        self.url = f"https://localhost:{self._server.server_port}"
        self.iss = self.url + "/fhir"
        self.app.config["SANDBOX_BASE_URL"] = self.url
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)


def client_key(folder: Path) -> tuple[Path, dict[str, Any]]:
    """A fresh RS384 key for our client: the PEM file for the app, the public JWK for the sandbox."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = folder / "client-key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    jwk.update({"kid": "tls-test-1", "alg": "RS384", "use": "sig"})
    return path, jwk


def write_deployment(folder: Path, key_file: Path, iss: str, *, name: str = "hospital-tls",
                     tuning: dict[str, Any] | None = None) -> Path:
    """The sandbox deployment's scopes and profile, under our own name, client and key, embedded in the EHR's
    frame, with ``tuning`` added to its tuning block."""
    data = yaml.safe_load((ROOT / "config" / "deployments" / "sandbox.yaml").read_text())
    listed = urlsplit(data["standalone_iss"])
    served = urlsplit(iss)
    data.update({"client_id": CLIENT_ID, "private_key_file": str(key_file),
                 "key_id": "tls-test-1", "allowed_iss": [iss], "standalone_iss": iss,
                 # The EHR's identity moves with it: its iss values and per-launch pattern on the TLS origin.
                 "ehrs": with_origin(data.get("ehrs") or {}, f"{listed.scheme}://{listed.netloc}",
                                     f"{served.scheme}://{served.netloc}")})
    # A hospital's own file keeps the app's default: nothing written where it copies forward (the sandbox file
    # turns the score row on for the demo, which check-config warns about).
    data.pop("broadly_visible", None)
    data["tuning"] = {**data.get("tuning", {}), "embedded_in_iframe": True, "log_level": "WARNING",
                      **(tuning or {})}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@contextmanager
def database_url(folder: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """PostgreSQL (a fresh schema) when TEST_DATABASE_URL answers, as a deployment runs (always under CI); else
    SQLite, allowed explicitly (the tuning it needs: ``allow_sqlite``)."""
    base = tools.postgres_base_url(optional=True)
    if not base:
        yield f"sqlite:///{folder / 'app.db'}", {"allow_sqlite": True}
        return
    with tools.postgres_schema(base, "tls") as url:
        yield url, {}


@dataclass
class AppProcess:
    """The app under gunicorn plus the outbox worker, as separate processes; ``url`` is what the browser opens."""

    url: str
    env: dict[str, str]
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def log_tail(self, chars: int = 4000) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}" for p in self.logs if p.exists())

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def app_env(*, deployment: Path, db_url: str, base_url: str, ca_file: Path, ehr_origin: str,
            **extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONHASHSEED")}
    return {
        **keep,
        "PYTHONPATH": str(ROOT),
        "IPV_DEPLOYMENT": str(deployment),
        "DATABASE_URL": db_url,
        "SECRET_KEY": secrets.token_urlsafe(48),
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "APP_BASE_URL": base_url,
        "FRAME_ANCESTORS": f"'self' {ehr_origin}",
        # The app calls the EHR over TLS too: it trusts the test CA, nothing else changes.
        "REQUESTS_CA_BUNDLE": str(ca_file),
        **extra,
    }


def _run_checked(cmd: list[str], env: dict[str, str]) -> str:
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


def migrate_and_check(env: dict[str, str]) -> str:
    """What DEPLOY.md says to do before start: the configuration check, then the migrations."""
    report = _run_checked([str(BIN / "flask"), "--app", "smart_app", "check-config"], env)
    _run_checked([str(BIN / "flask"), "--app", "smart_app", "db", "upgrade"], env)
    return report


def start_worker(app: AppProcess, folder: Path) -> None:
    log = folder / "worker.log"
    app.logs.append(log)
    app.procs.append(subprocess.Popen(
        [str(BIN / "flask"), "--app", "smart_app", "outbox-worker", "--idle-sleep", "0.2"],
        env=app.env, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT))


def wait_ready(url: str, ca_file: Path, app: AppProcess, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in app.procs):
            raise RuntimeError(f"a process exited during start-up:\n{app.log_tail()}")
        try:
            resp = requests.get(url + "/healthz", verify=str(ca_file), timeout=5)
            if resp.status_code == 200:
                return
            last = resp.status_code
        except requests.RequestException as exc:
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"{url} not ready ({last}):\n{app.log_tail()}")


def start_gunicorn_tls(*, issued: Issued, env_for: Any, folder: Path, ca_file: Path) -> AppProcess:
    """gunicorn serving TLS itself on a socket this process bound (fd://), 2 workers, plus the outbox worker."""
    sock = bound_socket()
    url = f"https://127.0.0.1:{sock.getsockname()[1]}"
    env = env_for(url)
    report = migrate_and_check(env)
    app = AppProcess(url, env)
    app.check_report = report  # type: ignore[attr-defined]
    log = folder / "gunicorn.log"
    app.logs.append(log)
    app.procs.append(subprocess.Popen(
        [str(BIN / "gunicorn"), "--bind", f"fd://{sock.fileno()}", "--workers", "2", "--threads", "4",
         "--certfile", str(issued.cert_file), "--keyfile", str(issued.key_file), "--timeout", "60",
         "smart_app:create_app()"],
        env={**env, "HOME": str(folder)}, cwd=ROOT, pass_fds=(sock.fileno(),), stdout=log.open("w"),
        stderr=subprocess.STDOUT))
    sock.close()  # gunicorn holds its own copy
    start_worker(app, folder)
    wait_ready(url, ca_file, app)
    return app


NGINX_CONF = """\
# As root (CI), workers would run as nobody and could not reach the socket in pytest's 0700 tmp_path.
user root;
daemon off;
master_process on;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/nginx-error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {folder}/client_body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    upstream ipv_app {{ server unix:{socket}; }}
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name 127.0.0.1;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://ipv_app;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Host $host;
            proxy_set_header X-Forwarded-Port $server_port;
            proxy_read_timeout 60s;
        }}
    }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_behind_nginx(*, issued: Issued, env_for: Any, folder: Path, ca_file: Path) -> AppProcess:
    """gunicorn on a unix socket (plain HTTP), Debian's nginx terminating TLS in front of it and forwarding
    X-Forwarded-*; the app trusts exactly one proxy hop (TRUSTED_PROXY_HOPS=1)."""
    if not os.access(NGINX, os.X_OK):
        raise FileNotFoundError(f"nginx not found at {NGINX} (apt-get install nginx-light)")
    app_sock = folder / "app.sock"
    for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (folder / name).mkdir(exist_ok=True)
    for _attempt in range(5):
        # nginx binds its own port: a port freed here could be taken before nginx binds it, so retry.
        port = _free_port()
        url = f"https://127.0.0.1:{port}"
        conf = folder / "nginx.conf"
        conf.write_text(NGINX_CONF.format(folder=folder, socket=app_sock, port=port, cert=issued.cert_file,
                                          key=issued.key_file))
        nginx_log = folder / "nginx.out"
        nginx = subprocess.Popen([NGINX, "-p", str(folder), "-c", str(conf), "-e", str(folder / "nginx-error.log")],
                                 stdout=nginx_log.open("w"), stderr=subprocess.STDOUT)
        try:
            nginx.wait(timeout=1.0)  # exits at once when the port is taken
        except subprocess.TimeoutExpired:
            break
    else:
        raise RuntimeError(f"nginx did not start:\n{(folder / 'nginx-error.log').read_text()}")
    env = env_for(url)
    env["TRUSTED_PROXY_HOPS"] = "1"
    app = AppProcess(url, env, procs=[nginx], logs=[folder / "nginx-error.log"])
    try:
        app.check_report = migrate_and_check(env)  # type: ignore[attr-defined]
        log = folder / "gunicorn.log"
        app.logs.append(log)
        app.procs.append(subprocess.Popen(
            [str(BIN / "gunicorn"), "--bind", f"unix:{app_sock}", "--workers", "2", "--threads", "4",
             "--timeout", "60", "smart_app:create_app()"],
            # HOME: gunicorn >= 23 puts its control socket there; one per instance, not one shared.
            env={**env, "HOME": str(folder)}, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT))
        start_worker(app, folder)
        wait_ready(url, ca_file, app)
    except BaseException:
        app.stop()
        raise
    return app
