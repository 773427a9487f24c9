"""A missing PostgreSQL, Chromium, nginx, PgBouncer, Redis or espeak-ng skips its tests on a developer's machine and
fails them under CI (``tests/support/tools.py``), so a CI run without a tool can never end green on skips."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import tools

ROOT = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once it is closed


@pytest.fixture
def nothing_installed(monkeypatch, tmp_path):
    """Every tool looked for where it is not."""
    port = _closed_port()
    monkeypatch.setattr(tools, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setattr(tools, "ESPEAK", str(tmp_path / "no-espeak-ng"))
    monkeypatch.setattr(tools, "REDIS_PORT", port)
    monkeypatch.setenv("TEST_DATABASE_URL", f"postgresql+psycopg://postgres@127.0.0.1:{port}/test")
    return {
        "Chromium": tools.chromium,
        "nginx": lambda: tools.nginx(str(tmp_path / "no-nginx")),
        "PgBouncer": lambda: tools.pgbouncer(str(tmp_path / "no-pgbouncer")),
        "Redis": tools.redis_url,
        "PostgreSQL": tools.postgres_base_url,
        "espeak-ng": tools.espeak,
    }


@pytest.mark.parametrize("ci", ["1", "true", "TRUE", "yes"])
def test_under_ci_a_missing_tool_fails_naming_it(nothing_installed, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    for tool, need in nothing_installed.items():
        with pytest.raises(pytest.fail.Exception) as failed:
            need()
        assert str(failed.value).startswith(f"{tool} missing: ") and "CI is set" in str(failed.value), tool


@pytest.mark.parametrize("ci", [None, "", "0", "false"])
def test_without_ci_a_missing_tool_skips_naming_it(nothing_installed, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    for tool, need in nothing_installed.items():
        with pytest.raises(pytest.skip.Exception) as skipped:
            need()
        assert str(skipped.value).startswith(f"{tool} missing: "), tool


def test_postgresql_unset_is_missing_too(monkeypatch):
    monkeypatch.delenv("TEST_DATABASE_URL", raising=False)
    monkeypatch.setenv("CI", "1")
    with pytest.raises(pytest.fail.Exception, match="TEST_DATABASE_URL is not set"):
        tools.postgres_base_url()


def test_optional_postgresql_falls_back_only_outside_ci(nothing_installed, monkeypatch):
    """The fault suite and the tls tests run on SQLite without PostgreSQL locally, never under CI."""
    monkeypatch.delenv("CI", raising=False)
    assert tools.postgres_base_url(optional=True) is None
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="PostgreSQL missing"):
        tools.postgres_base_url(optional=True)


@pytest.mark.parametrize("ci, outcome, code", [("1", "1 error", 1), ("0", "skipped", 0)])
def test_a_run_without_chromium(tmp_path, ci, outcome, code):
    """What CI meets: a real pytest run of a browser test with Chromium missing fails under CI, skips otherwise."""
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_XDIST_WORKER"}
    env.update(CI=ci, CHROMIUM=str(tmp_path / "no-chromium"))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests/sandbox/test_ehr_browser.py::test_encounter_list_follows_the_patient"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == code, out[-3000:]
    assert outcome in out and "Chromium missing: no executable at" in out, out[-3000:]
