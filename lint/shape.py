"""Code shape for `make lint`: no function of the product code with cyclomatic complexity 25 or more (radon's
measure, closures and methods each counted on their own) and no class over 250 lines.

    python -m lint.shape [ROOT]

An offender named in ``lint/allow.txt`` (with the reason it is allowed for now) is listed but does not fail;
any other fails the check. An allowed name that is no longer an offender is listed for removal.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from radon.visitors import Class, ComplexityVisitor, Function

PRODUCT = ("smart_app", "fhir", "referrals", "config")
MAX_COMPLEXITY = 24  # 25 or more fails
MAX_CLASS_LINES = 250
ALLOW_FILE = Path(__file__).with_name("allow.txt")
KINDS = ("complexity", "class-size")


@dataclass(frozen=True)
class Offender:
    kind: str  # "complexity" | "class-size"
    path: str  # relative to the root, with /
    name: str  # qualified: Class.method, function.closure
    line: int
    measure: int

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, f"{self.path}:{self.name}"

    def describe(self) -> str:
        what = f"complexity {self.measure}" if self.kind == "complexity" else f"{self.measure} lines"
        return f"{self.path}:{self.line} {self.name} ({what})"


def _functions(blocks: Iterable[Function | Class], prefix: str = "") -> Iterator[tuple[str, Function]]:
    for block in blocks:
        name = f"{prefix}{block.name}"
        if isinstance(block, Class):
            yield from _functions([*block.methods, *block.inner_classes], f"{name}.")
        else:
            yield name, block
            yield from _functions(block.closures, f"{name}.")


def _classes(tree: ast.AST, prefix: str = "") -> Iterator[tuple[str, ast.ClassDef]]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.ClassDef):
            yield f"{prefix}{node.name}", node
            yield from _classes(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield from _classes(node, f"{prefix}{node.name}.")


def offenders(root: Path, packages: Iterable[str] = PRODUCT) -> list[Offender]:
    found: list[Offender] = []
    for package in packages:
        for file in sorted((root / package).rglob("*.py")):
            path = file.relative_to(root).as_posix()
            code = file.read_text(encoding="utf-8")
            visitor = ComplexityVisitor.from_code(code)
            for name, function in _functions([*visitor.functions, *visitor.classes]):
                if function.complexity > MAX_COMPLEXITY:
                    found.append(Offender("complexity", path, name, function.lineno, function.complexity))
            for name, node in _classes(ast.parse(code, filename=path)):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                lines = node.end_lineno - first + 1
                if lines > MAX_CLASS_LINES:
                    found.append(Offender("class-size", path, name, first, lines))
    return found


def read_allowed(text: str) -> dict[tuple[str, str], str]:
    """``<kind> <path>:<qualified name>  <reason>`` per line; # starts a comment."""
    allowed: dict[tuple[str, str], str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split(None, 2)
        if len(parts) < 3 or parts[0] not in KINDS or ":" not in parts[1]:
            raise ValueError(f"allow list line {number}: want '<{'|'.join(KINDS)}> <path>:<name> <reason>': {raw!r}")
        allowed[(parts[0], parts[1])] = parts[2]
    return allowed


def report(found: list[Offender], allowed: dict[tuple[str, str], str]) -> tuple[list[str], bool]:
    """The lines to print and whether the check passes."""
    failing = [o for o in found if o.key not in allowed]
    tolerated = [o for o in found if o.key in allowed]
    stale = sorted(set(allowed) - {o.key for o in found})
    lines: list[str] = []
    if failing:
        lines.append(f"Code shape: {len(failing)} offender(s): functions with cyclomatic complexity >= "
                     f"{MAX_COMPLEXITY + 1} or classes over {MAX_CLASS_LINES} lines. Split them:")
        lines += [f"  {o.describe()}" for o in failing]
    if tolerated:
        lines.append(f"Allowed for now by {ALLOW_FILE.parent.name}/{ALLOW_FILE.name} ({len(tolerated)}):")
        lines += [f"  {o.describe()}: {allowed[o.key]}" for o in tolerated]
    if stale:
        lines.append("No longer over the limit, remove from the allow list:")
        lines += [f"  {kind} {name}" for kind, name in stale]
    if not lines:
        lines.append("Code shape: every function below complexity "
                     f"{MAX_COMPLEXITY + 1}, every class within {MAX_CLASS_LINES} lines")
    return lines, not failing


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parents[1]
    allowed = read_allowed(ALLOW_FILE.read_text(encoding="utf-8")) if ALLOW_FILE.exists() else {}
    lines, ok = report(offenders(root), allowed)
    print("\n".join(lines), file=sys.stdout if ok else sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
