"""A Prometheus scrape through the shipped nginx site (deploy/nginx-ipv.conf, only its ports, certificate and log
paths changed) reaches /metrics on either of two gunicorn instances (config/gunicorn.conf.py) and sees the app's
counters and the outbox worker's, all three processes sharing one PROMETHEUS_MULTIPROC_DIR as the units and the
compose file set it. Before: nginx sent ``Host: ipv_app`` to /metrics (400 from the trusted-hosts check), refused
this host, and the worker's counters reached no /metrics at all."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import requests
import yaml
from cryptography.fernet import Fernet

from tests.support.tls import TestCA, _free_port

pytestmark = [pytest.mark.ops, pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
HOST = "ipv.example-health.org"


def shipped_site(folder: Path, ports: dict[str, int], cert: Path, key: Path) -> str:
    """deploy/nginx-ipv.conf with this test's ports, certificate and log folder, and nothing else changed."""
    site = (ROOT / "deploy" / "nginx-ipv.conf").read_text()
    changes = [("server 127.0.0.1:8001 ", f"server 127.0.0.1:{ports['app1']} "),
               ("server 127.0.0.1:8002 ", f"server 127.0.0.1:{ports['app2']} "),
               ("listen 443 ssl;", f"listen 127.0.0.1:{ports['tls']} ssl;"),
               ("listen [::]:443 ssl;", ""), ("listen [::]:80;", ""),
               ("listen 80;", f"listen 127.0.0.1:{ports['http']};"),
               ("/etc/ssl/ipv/fullchain.pem", str(cert)), ("/etc/ssl/ipv/privkey.pem", str(key)),
               ("/var/log/nginx/", f"{folder}/")]
    for old, new in changes:
        assert old in site, f"deploy/nginx-ipv.conf no longer has {old!r}: update this test"
        site = site.replace(old, new)
    return site


def _deployment(folder: Path) -> Path:
    """The sandbox deployment with the public host name as its one trusted host (as a site sets it)."""
    data = yaml.safe_load((ROOT / "config" / "deployments" / "sandbox.yaml").read_text())
    data["private_key_file"] = str(ROOT / "sandbox_ehr" / "keys" / "rs384-private.pem")
    data["tuning"] = {**data.get("tuning", {}), "trusted_hosts": [HOST], "log_level": "WARNING"}
    path = folder / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _scrape(port: int, token: str) -> requests.Response:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test CA's certificate is for HOST, reached here by address
        return requests.get(f"https://127.0.0.1:{port}/metrics", timeout=10, verify=False,
                            headers={"Host": HOST, "Authorization": f"Bearer {token}"})


def _value(text: str, pattern: str) -> float:
    found = [float(m.group(1)) for m in re.finditer(pattern + r" (\S+)$", text, re.M)]
    return sum(found)


def test_a_scrape_through_the_shipped_nginx_sees_the_apps_and_the_workers_counters(tmp_path, postgres_url,
                                                                                   start_nginx):
    metrics = tmp_path / "ipv-metrics"
    metrics.mkdir(mode=0o700)
    token = secrets.token_urlsafe(32)
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update({"PYTHONPATH": str(ROOT), "IPV_MODE": "test", "IPV_DEPLOYMENT": str(_deployment(tmp_path)),
                "DATABASE_URL": postgres_url, "SECRET_KEY": secrets.token_urlsafe(48),
                "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(), "APP_BASE_URL": f"https://{HOST}",
                "TRUSTED_PROXY_HOPS": "1", "METRICS_TOKEN": token, "PROMETHEUS_MULTIPROC_DIR": str(metrics),
                "GUNICORN_WORKERS": "1", "GUNICORN_THREADS": "4"})
    flask = [str(BIN / "flask"), "--app", "smart_app"]
    upgraded = subprocess.run([*flask, "db", "upgrade"], env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=180)
    assert upgraded.returncode == 0, upgraded.stderr[-3000:]
    ca = TestCA(tmp_path)
    issued = ca.issue(HOST)
    ports = {"app1": _free_port(), "app2": _free_port(), "tls": _free_port(), "http": _free_port()}
    (tmp_path / "ipv.conf").write_text(shipped_site(tmp_path, ports, issued.cert_file, issued.key_file))
    logs: list[Path] = []

    def spawn(name: str, cmd: list[str], **extra: str) -> subprocess.Popen:
        log = tmp_path / f"{name}.log"
        logs.append(log)
        return subprocess.Popen(cmd, env={**env, **extra}, cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT)

    procs = [spawn(name, [str(BIN / "gunicorn"), "-c", str(ROOT / "config" / "gunicorn.conf.py"),
                          "smart_app:create_app()"], GUNICORN_BIND=f"127.0.0.1:{ports[name]}")
             for name in ("app1", "app2")]
    procs.append(spawn("worker", [*flask, "outbox-worker", "--idle-sleep", "0.2"]))
    procs.append(start_nginx(f"include {tmp_path}/ipv.conf;"))  # stopped by the fixture too
    logs.append(tmp_path / "error.log")

    def tail() -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in logs if p.exists())

    try:
        seen = ""
        for _ in range(600):  # until both instances serve, the worker has run rounds and a scrape shows both
            assert all(p.poll() is None for p in procs), tail()
            try:
                for app in ("app1", "app2", "app1", "app2"):
                    requests.get(f"http://127.0.0.1:{ports[app]}/healthz", headers={"Host": HOST}, timeout=5)
                resp = _scrape(ports["tls"], token)
                seen = resp.text
                if resp.status_code == 200 and "ipv_outbox_rounds_total" in seen:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.1)
        assert "ipv_outbox_rounds_total" in seen, tail() + "\n--- scrape\n" + seen[-2000:]
        healthz = r'ipv_http_requests_total\{method="GET",route="/healthz",status="200"\}'
        rounds = r'ipv_outbox_rounds_total\{claimed="no"\}'
        totals = []
        for _ in range(4):  # round robin: both instances answer, each with every process's counters
            resp = _scrape(ports["tls"], token)
            assert resp.status_code == 200, (resp.status_code, resp.text[:300])
            assert _value(resp.text, healthz) >= 4 and _value(resp.text, rounds) >= 1, resp.text[-3000:]
            totals.append(_value(resp.text, r'ipv_http_requests_total\{method="GET",route="/metrics",status="200"\}'))
        assert totals == sorted(totals) and totals[-1] > totals[0]  # one sum, whichever instance answered
        without = requests.get(f"http://127.0.0.1:{ports['app1']}/metrics", headers={"Host": HOST}, timeout=5)
        assert without.status_code == 401  # the token is still needed
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
