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
    assert _offenders("fhir", ("smart_app", "referrals", "sandbox_ehr", "config")) == []


def _config_paths(package: str) -> list[str]:
    """String constants in ``package`` that name the settings folder as a path: ``"config"`` on its own (a Path
    part) or a string starting with ``config/``."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    node.value.strip("/") == "config" or node.value.startswith("config/")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_fhir_wire_layer_reads_no_settings_file_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The wire layer builds from explicit inputs: an EHR profile or deployment reaches it as values, never as a
    file under config/ that it opens itself. The check can fail: a planted path is found."""
    assert _config_paths("fhir") == []
    (tmp_path / "fakepkg").mkdir()
    (tmp_path / "fakepkg" / "mod.py").write_text('from pathlib import Path\nP = Path(__file__).parent / "config"\n')
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert _config_paths("fakepkg") == ["fakepkg/mod.py:2"]


@pytest.mark.parametrize("package", ["smart_app", "fhir", "referrals", "config"])
def test_product_packages_never_import_the_sandbox_ehr(package: str) -> None:
    assert _offenders(package, ("sandbox_ehr", "tests")) == []


def test_benchmarks_never_import_the_tests() -> None:
    """`make bench` runs without the test suite: what both drive the app with lives in sandbox_ehr/harness/."""
    assert _offenders("benchmarks", ("tests",)) == []


def test_the_harness_never_imports_the_tests() -> None:
    assert _offenders("sandbox_ehr", ("tests",)) == []


def test_the_scan_sees_function_local_imports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a function-local import is found."""
    pkg = tmp_path / "fakepkg"
    pkg.mkdir()
    (pkg / "mod.py").write_text("def f():\n    from smart_app.store.models import X\n    return X\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert _offenders("fakepkg", ("smart_app",)) == ["fakepkg/mod.py: smart_app.store.models"]


def test_sandbox_ehr_and_its_keys_are_not_in_the_wheel() -> None:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = data["tool"]["setuptools"]["packages"]["find"]["include"]
    assert not any(pattern.startswith("sandbox") for pattern in include)
    assert not list((ROOT / "config").rglob("*.pem")), "keys belong with the sandbox EHR, not in config/"


# -- smart_app's feature packages ---------------------------------------------------------------------------
# Lowest first: a package may import its own modules and those of packages before it, never one after it.
FEATURE_ORDER = ("store", "ops", "launch", "ranking", "report", "screening", "followup", "referral", "outbox",
                 "worklist", "writeback", "leakcheck", "cds", "kiosk")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _module_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Every module of ``package`` -> the modules of ``package`` it imports (at any depth in the file: function-local
    and TYPE_CHECKING imports count). ``from pkg import name`` points at ``pkg.name`` when that is a module."""
    files = {_module_name(p, root): p for p in sorted((root / package).rglob("*.py"))
             if "migrations" not in p.relative_to(root).parts}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in files else node.module
                         for alias in node.names]
            else:
                continue
            targets.update(n for n in names if n.split(".")[0] == package and n != mod)
        graph[mod] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _feature(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the factory itself


def _upward_imports(graph: dict[str, set[str]]) -> list[str]:
    rank = {name: i for i, name in enumerate(FEATURE_ORDER)}
    bad = []
    for mod, targets in graph.items():
        here = _feature(mod)
        for target in targets:
            there = _feature(target)
            if here is None or there is None or here == there:
                continue
            if rank[there] > rank[here]:
                bad.append(f"{mod} -> {target}")
    return sorted(bad)


def test_smart_app_has_no_import_circles() -> None:
    assert _cycles(_module_graph(ROOT, "smart_app")) == []


def test_smart_app_packages_import_only_downwards() -> None:
    assert _upward_imports(_module_graph(ROOT, "smart_app")) == []


def test_every_smart_app_package_has_a_place_in_the_order() -> None:
    packages = {p.name for p in (ROOT / "smart_app").iterdir() if (p / "__init__.py").exists()}
    assert packages == set(FEATURE_ORDER)


def test_nothing_but_the_factory_at_the_top_of_smart_app() -> None:
    assert sorted(p.name for p in (ROOT / "smart_app").glob("*.py")) == ["__init__.py"]


def test_no_feature_imports_another_features_views() -> None:
    graph = _module_graph(ROOT, "smart_app")
    bad = sorted(f"{mod} -> {t}" for mod, targets in graph.items() for t in targets
                 if t.endswith(".views") and _feature(mod) not in (None, _feature(t)))
    assert bad == []


def test_the_checks_catch_a_planted_circle_and_an_upward_import(tmp_path: Path) -> None:
    """The checks above can fail: a circle hidden in a function and an import from store up to a feature."""
    pkg = tmp_path / "smart_app"
    for name in ("store", "screening"):
        (pkg / name).mkdir(parents=True)
        (pkg / name / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "store" / "models.py").write_text("def f():\n    from smart_app.screening import urgent\n")
    (pkg / "screening" / "urgent.py").write_text("from smart_app.store.models import f\n")
    (pkg / "screening" / "views.py").write_text("")
    (pkg / "store" / "db.py").write_text("from smart_app.screening import views\n")
    graph = _module_graph(tmp_path, "smart_app")
    assert _cycles(graph) == [["smart_app.screening.urgent", "smart_app.store.models"]]
    assert _upward_imports(graph) == ["smart_app.store.db -> smart_app.screening.views",
                                      "smart_app.store.models -> smart_app.screening.urgent"]


def test_the_committed_picture_of_smart_app_matches_the_code() -> None:
    from docs.import_graph import PICTURE, package_edges, render

    expected = render(package_edges(_module_graph(ROOT, "smart_app")), FEATURE_ORDER)
    assert PICTURE.read_text(encoding="utf-8") == expected, "run `python -m docs.import_graph` and commit the picture"


def _function_local_imports(root: Path, packages: tuple[str, ...]) -> list[str]:
    """Imports of this project's own modules made inside a function: each one hides an edge of the import graph
    (the usual reason is dodging a circle, which means the code is in the wrong place)."""
    found = []
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for node in ast.walk(fn):
                    names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                             else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
                    found += [f"{path.relative_to(root)}:{node.lineno} {name}" for name in names
                              if name.split(".")[0] in packages and not name.startswith("fhir.resources")]
    return found


def test_smart_app_and_the_wire_layer_import_their_own_modules_at_the_top() -> None:
    assert _function_local_imports(ROOT, ("smart_app", "fhir")) == []


def test_the_function_local_scan_finds_a_planted_import(tmp_path: Path) -> None:
    (tmp_path / "smart_app").mkdir()
    (tmp_path / "smart_app" / "x.py").write_text("def f():\n    from smart_app.store.db import get_session\n")
    planted = Path("smart_app", "x.py")  # made in tmp_path only
    assert _function_local_imports(tmp_path, ("smart_app",)) == [f"{planted}:2 smart_app.store.db"]
