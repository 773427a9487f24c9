"""`make lint`'s code-shape check (lint/shape.py): a function of complexity 25 or more, or a class over 250
lines, in the product code fails unless lint/allow.txt names it with a reason."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lint import shape

ROOT = Path(__file__).resolve().parents[1]


def _branches(n: int, indent: str) -> str:
    """A body of ``n`` ifs: complexity n + 1."""
    return "".join(f"{indent}if x == {i}:\n{indent}    return {i}\n" for i in range(n)) + f"{indent}return -1\n"


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A product package with one offender of each kind and their harmless neighbours."""
    pkg = tmp_path / "planted"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "wire.py").write_text(
        "def tangled(x):\n" + _branches(24, "    ")            # complexity 25: fails
        + "\n\ndef fine(x):\n" + _branches(23, "    ")        # complexity 24: passes
        + "\n\ndef outer(x):\n    def inner(x):\n" + _branches(30, "        ") + "    return inner(x)\n"
        + "\n\nclass Big:\n" + "".join(f"    a{i} = {i}\n" for i in range(250))   # 251 lines: fails
        + "\n\nclass Small:\n" + "".join(f"    b{i} = {i}\n" for i in range(249))  # 250 lines: passes
        + "\n\nclass Service:\n    def method(self, x):\n" + _branches(26, "        ")
    )
    return tmp_path


def test_planted_offenders_are_found_with_their_measure(planted):
    found = {(o.kind, o.name): o.measure for o in shape.offenders(planted, ["planted"])}
    assert found == {("complexity", "tangled"): 25, ("complexity", "outer.inner"): 31,
                     ("class-size", "Big"): 251, ("complexity", "Service.method"): 27}


def test_an_offender_fails_the_check_naming_it(planted):
    lines, ok = shape.report(shape.offenders(planted, ["planted"]), {})
    assert not ok
    text = "\n".join(lines)
    assert "planted/wire.py:1 tangled (complexity 25)" in text and "Big (251 lines)" in text
    assert " fine " not in text


def test_the_allow_list_lets_named_offenders_pass_and_lists_stale_names(planted):
    found = shape.offenders(planted, ["planted"])
    allowed = shape.read_allowed("\n".join(f"{o.kind} {o.path}:{o.name}  being split  # why" for o in found)
                                 + "\ncomplexity planted/gone.py:split_already  being split\n")
    lines, ok = shape.report(found, allowed)
    assert ok
    text = "\n".join(lines)
    assert "tangled (complexity 25): being split" in text
    assert "remove from the allow list" in text and "complexity planted/gone.py:split_already" in text
    lines, ok = shape.report(found, {k: v for k, v in allowed.items() if k != ("class-size", "planted/wire.py:Big")})
    assert not ok and "Big (251 lines)" in lines[1]


def test_an_allow_line_needs_a_kind_a_place_and_a_reason():
    for bad in ("complexity planted/x.py:f", "size planted/x.py:f being split", "complexity f being split"):
        with pytest.raises(ValueError, match="allow list line 1"):
            shape.read_allowed(bad)


def test_make_lint_runs_the_check_on_the_product_code():
    """The check as `make lint` runs it, on this repository: it passes, naming what the allow list tolerates."""
    result = subprocess.run([sys.executable, "-m", "lint.shape"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    makefile = (ROOT / "Makefile").read_text()
    assert "-m lint.shape" in makefile and re.search(r"^test: lint\b", makefile, re.M)
