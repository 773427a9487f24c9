"""The project installs into a fresh venv (non-editable, its dependencies from the runtime lock) and our ``fhir``
modules import side by side with ``fhir.resources`` (DESIGN.md "The fhir name").

Slow (a venv and a full install); part of ``make test``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# What the distribution is built from: pyproject's package list plus its metadata files.
SOURCES = ("pyproject.toml", "README.md", "smart_app", "fhir", "referrals", "config")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "instance", "*.egg-info", "build")

CHECK = textwrap.dedent("""
    import importlib, json, sys
    order = sys.argv[1].split(",")
    mods = {name: importlib.import_module(name) for name in order}
    import fhir
    from fhir.resources.R4B.patient import Patient
    from fhir.client import FhirClient
    from fhir.smart.oauth import new_pkce
    from fhir.smart.discovery import DiscoveryCache
    p = Patient.model_validate({"resourceType": "Patient", "id": "x", "name": [{"family": "Test"}]})
    assert p.name[0].family == "Test"
    assert new_pkce().method == "S256" and FhirClient("https://x/fhir", None).base_url == "https://x/fhir"
    print(json.dumps({name: m.__file__ for name, m in mods.items()} | {"fhir_path": list(fhir.__path__)}))
""")


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_fresh_venv_install_imports_fhir_resources_and_our_fhir_together(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=IGNORE)
        else:
            shutil.copy2(path, src / name)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    py = env_dir / "bin" / "python"
    # No repo on the path: only what pip installed may be imported.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    # As the image and CI install: the hash-pinned dependencies of the lock, then the project alone.
    _run([str(py), "-m", "pip", "install", "-q", "--no-input", "--require-hashes", "-r",
          str(ROOT / "requirements" / "runtime.lock")], cwd=tmp_path, env=env)
    _run([str(py), "-m", "pip", "install", "-q", "--no-input", "--no-deps", str(src)], cwd=tmp_path, env=env)
    _run([str(py), "-m", "pip", "check"], cwd=tmp_path, env=env)
    site = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env)
    site_packages = Path(site.stdout.strip())
    assert (site_packages / "fhir" / "resources").is_dir() and (site_packages / "fhir" / "client.py").is_file()
    assert not any(p.name.endswith(".egg-link") or p.name.startswith("__editable__") for p in site_packages.iterdir())

    work = tmp_path / "elsewhere"
    work.mkdir()
    orders = ("fhir.resources.R4B.patient,fhir.client,fhir.smart", "fhir.smart,fhir.client,fhir.resources.R4B.patient",
              "smart_app,fhir.context,fhir.resources")
    for order in orders:
        out = _run([str(py), "-c", CHECK, order], cwd=work, env=env).stdout
        assert str(ROOT) not in out, f"imported from the repo, not the install: {out}"
        assert str(site_packages) in out
