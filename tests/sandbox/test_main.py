"""``python -m sandbox_ehr`` starts a working sandbox EHR."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

from config.current import settings_of

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_sandbox(tmp_path: Path, *args: str) -> Iterator[str]:
    """``python -m sandbox_ehr`` with ``args`` on a free port; yields its base URL once it answers."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "sandbox_ehr", "--port", str(port), "--db",
                             str(tmp_path / "s.db"), *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(base + "/fhir/metadata", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "sandbox did not start"
                time.sleep(0.1)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_python_m_fhir_sandbox_serves_ehr_and_fhir(tmp_path):
    with running_sandbox(tmp_path, "--app-launch-url", "http://127.0.0.1:5999/launch", "--no-faults") as base:
        metadata = requests.get(base + "/fhir/metadata", timeout=5)
        assert metadata.status_code == 200
        assert metadata.json()["resourceType"] == "CapabilityStatement"
        conf = requests.get(base + "/fhir/.well-known/smart-configuration", timeout=5).json()
        assert conf["issuer"] == base + "/fhir"
        ehr = requests.get(base + "/ehr", timeout=5)
        assert "http://127.0.0.1:5999/launch" in ehr.text
        assert requests.get(base + "/__faults", timeout=5).status_code == 404  # --no-faults
        assert (tmp_path / "s.db").exists()


def test_personality_flag_selects_the_vendor_rules(tmp_path):
    with running_sandbox(tmp_path, "--personality", "oracle", "--no-faults") as base:
        page = requests.get(base + "/ehr", timeout=5)
        assert 'data-personality="oracle"' in page.text and "Oracle Health Millennium" in page.text
        rest = requests.get(base + "/fhir/metadata", timeout=5).json()["rest"][0]
        assert not rest["interaction"] and rest["resource"][0]["conditionalCreate"] is False
    bad = subprocess.run([sys.executable, "-m", "sandbox_ehr", "--personality", "cerner-classic"], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr


def test_demo_wires_each_personality_to_its_ehr_profile(tmp_path):
    from sandbox_ehr.demo import build_apps

    for personality, profile in (("generic", "sandbox"), ("epic", "epic"), ("oracle", "oracle-health")):
        sandbox, app = build_apps("127.0.0.1", 5999, 8999, tmp_path / personality, personality)
        assert sandbox.extensions["sandbox_personality"].name == personality
        assert settings_of(app).ehr_profile == profile and settings_of(app).profile.ref == profile
        app.extensions["db_engine"].dispose()
        sandbox.extensions["sandbox_store"].close()


def test_per_launch_iss_flag_mints_an_iss_per_standalone_launch(tmp_path):
    with running_sandbox(tmp_path, "--app-launch-url", "http://127.0.0.1:5999/launch", "--per-launch-iss") as base:
        issued = []
        for _ in range(2):
            r = requests.post(base + "/ehr/standalone", allow_redirects=False, timeout=5)
            assert r.status_code == 303
            assert r.headers["Location"].startswith("http://127.0.0.1:5999/launch/standalone?iss=")
            issued.append(parse_qs(urlsplit(r.headers["Location"]).query)["iss"][0])
        assert issued[0] != issued[1]
        for iss in issued:
            assert iss.startswith(base + "/l/") and iss.endswith("/fhir")
            conf = requests.get(iss + "/.well-known/smart-configuration", timeout=5).json()
            assert conf["issuer"] == iss
            assert conf["token_endpoint"] == iss.removesuffix("/fhir") + "/auth/token"
