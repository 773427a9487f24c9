"""ipv-directory validate / import / list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from config.deployment import DEPLOYMENTS_DIR
from referrals.cli import main
from referrals.store import DEFAULT_DIRECTORY, build
from tests.referrals import samples

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    """A deployment whose import folder is the test's own (the CLI reads it from IPV_DEPLOYMENT)."""
    data = yaml.safe_load((DEPLOYMENTS_DIR / "sandbox.yaml").read_text())
    data["private_key_file"] = str(ROOT / "sandbox_ehr" / "keys" / "rs384-private.pem")
    data["tuning"] = {"directory_import_dir": str(tmp_path / "imported")}
    deployment = tmp_path / "deployments" / "sandbox.yaml"
    deployment.parent.mkdir()
    deployment.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("IPV_DEPLOYMENT", str(deployment))


def test_validate_ok_and_refused(tmp_path, capsys):
    assert main(["validate", str(DEFAULT_DIRECTORY)]) == 0
    assert "OK:" in capsys.readouterr().out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"id": "a b", "name": "X"}]))
    assert main(["validate", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "REFUSED" in err and f"{bad}: $[0].id: id must be" in err


@pytest.mark.parametrize("maker,fmt", [
    (lambda d: samples.write_hsds_json(d / "hsds.json"), "hsds-json"),
    (lambda d: samples.write_datapackage(d / "pkg"), "hsds-csv"),
    (lambda d: samples.write_fhir(d / "bundle.json"), "fhir"),
])
def test_import_writes_native_file_the_app_loads(tmp_path, capsys, maker, fmt):
    src = maker(tmp_path)
    assert main(["import", str(src), "--name", "extra"]) == 0
    target = tmp_path / "imported" / "extra.yaml"
    assert target.is_file()
    assert "IMPORTED" in capsys.readouterr().out
    assert not list((tmp_path / "imported").glob(".*"))  # no temp file left behind
    from config.settings import load_settings
    from referrals.store import configured_paths

    settings = load_settings()  # what the app reads from the same deployment file
    index = build(configured_paths(settings.directory_paths, settings.directory_import_dir))
    ids = {e.service.id for e in index.entries}
    assert "haven" in ids and len(ids) > 5  # the default directory plus the import
    # The written file round-trips through our own loader.
    assert main(["validate", str(target)]) == 0
    # What the loaded directory shares (equal texts and sources) is written out in full, not as YAML aliases.
    assert "&id" not in target.read_text() and "*id" not in target.read_text()


def test_failed_import_leaves_nothing(tmp_path, capsys):
    services = samples.hsds_services()
    services[0]["phones"][0]["number"] = "x"
    src = samples.write_hsds_json(tmp_path / "bad.json", services)
    assert main(["import", str(src)]) == 1
    assert not (tmp_path / "imported").exists() or not list((tmp_path / "imported").iterdir())
    assert "phones[0].number" in capsys.readouterr().err


def test_reimport_replaces_services_with_the_same_id(tmp_path, capsys):
    """Importing the same services twice replaces them; it never lists a program twice."""
    (tmp_path / "imported").mkdir()
    bundle = samples.fhir_bundle()
    src = samples.write_fhir(tmp_path / "b.json", bundle)
    assert main(["import", str(src), "--name", "one"]) == 0
    capsys.readouterr()
    # Same service ids: the later import replaces, not duplicates.
    assert main(["import", str(src), "--name", "two"]) == 0
    index = build([DEFAULT_DIRECTORY, tmp_path / "imported" / "one.yaml", tmp_path / "imported" / "two.yaml"])
    assert [e.service.id for e in index.entries].count("hs-rev") == 1


def test_list(capsys):
    assert main(["list", "-v"]) == 0
    out = capsys.readouterr().out
    assert "passageway" in out and "passageway-faulkner" in out and "1-617-724-0054" in out
    assert main(["list", "--json", str(DEFAULT_DIRECTORY)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {d["id"] for d in data} >= {"haven", "barcc"}


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "ipv-directory"
    assert exe.exists(), "pip install -e . should install the ipv-directory script"
    out = subprocess.run([str(exe), "validate", str(DEFAULT_DIRECTORY)], capture_output=True, text=True,
                         cwd=ROOT, timeout=60)
    assert out.returncode == 0 and "6 service(s)" in out.stdout
    out = subprocess.run([str(exe), "bogus"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
