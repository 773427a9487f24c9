"""Layers point one way (web -> domain -> FHIR wire), and the sandbox EHR is a test harness.

Every import is read from the source with ``ast``, including imports inside functions, so a
function-local import that dodges a cycle is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imported_modules(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def _offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path}: {name}"
        for path, names in _imported_modules(package).items()
        for name in names
        if name.split(".")[0] in forbidden
    )


def test_fhir_wire_layer_imports_nothing_from_the_app() -> None:
    assert _offenders("fhir", ("smart_app", "referrals", "sandbox_ehr")) == []


@pytest.mark.parametrize("package", ["smart_app", "fhir", "referrals", "config"])
def test_product_packages_never_import_the_sandbox_ehr(package: str) -> None:
    assert _offenders(package, ("sandbox_ehr", "tests")) == []


def test_the_scan_sees_function_local_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a function-local import is found."""
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text("def f():\n    from smart_app.models import X\n    return X\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert _offenders("fakepkg", ("smart_app",)) == ["fakepkg/mod.py: smart_app.models"]


def test_sandbox_ehr_and_its_keys_are_not_in_the_wheel() -> None:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = data["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(pattern.startswith("sandbox") for pattern in include)
    assert not list((ROOT / "config").rglob("*.pem")), "keys belong with the sandbox EHR, not in config/"
