"""``python -m sandbox_ehr`` starts a working sandbox EHR."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_python_m_fhir_sandbox_serves_ehr_and_fhir(tmp_path):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandbox_ehr", "--port", str(port), "--db", str(tmp_path / "s.db"),
         "--app-launch-url", "http://127.0.0.1:5999/launch", "--no-faults"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                metadata = requests.get(base + "/fhir/metadata", timeout=2)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, proc.stdout.read()
                assert time.monotonic() < deadline, "sandbox did not start"
                time.sleep(0.1)
        assert metadata.status_code == 200
        assert metadata.json()["resourceType"] == "CapabilityStatement"
        conf = requests.get(base + "/fhir/.well-known/smart-configuration", timeout=5).json()
        assert conf["issuer"] == base + "/fhir"
        ehr = requests.get(base + "/ehr", timeout=5)
        assert "http://127.0.0.1:5999/launch" in ehr.text
        assert requests.get(base + "/__faults", timeout=5).status_code == 404  # --no-faults
        assert (tmp_path / "s.db").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
