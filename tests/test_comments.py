"""Comments say why, and what they point at exists.

Product code carries no issue numbers or review-finding ids (the reason belongs in the comment, the history in
git), and every repository path named in code, comments or docs resolves to a file or folder that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("smart_app", "fhir", "referrals", "config")
TOP = ("smart_app", "fhir", "referrals", "config", "tests", "benchmarks", "sandbox_ehr", "deploy", "docs")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".html", ".js", ".css", ".toml", ".ini", ".cfg", ".conf", ".sh",
                 ".service", ".example", ".txt"}

ISSUE_REF = re.compile(r"\b[Ii]ssues?\s*#?\d+|\b(?:review\s+)?finding\s+[A-Z]{1,2}\d+\b|\(#\d+\)")
# A migration's revision id is data stored in every database it ran on: it keeps its old name.
REVISION_LINE = re.compile(r"^\s*(?:revision|down_revision)\s*=|^(?:Revision ID|Revises):")
PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(TOP) + r")/[\w./<>*-]*[\w*>])")
PLACEHOLDER = re.compile(r"[<>*]|NNNN|\bX\b")
# "referrals/s" is a rate, not a folder; deploy/ipv.env is the file the operator makes from deploy/ipv.env.example.
NOT_PATHS = {"referrals/s", "deploy/ipv.env"}
# Folders the build makes (make audio) and git never holds: named in docs, present only after a build.
BUILT = {"smart_app/kiosk/static/audio"}


def _files(folders: tuple[str, ...]) -> list[Path]:
    out = []
    for folder in folders:
        out += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in TEXT_SUFFIXES
                and "__pycache__" not in p.parts and "node_modules" not in p.parts]
    return sorted(out)


def _doc_files() -> list[Path]:
    extra = [ROOT / name for name in ("README.md", "DEPLOY.md", "Makefile", "Containerfile", "pyproject.toml",
                                      "alembic.ini", "babel.cfg") if (ROOT / name).exists()]
    return [p for p in extra + _files(TOP) + [ROOT / ".ci" / "run"] if p != Path(__file__).resolve()]


def _where(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else path.name


def issue_references(paths: list[Path], root: Path = ROOT) -> list[str]:
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if ISSUE_REF.search(line) and not REVISION_LINE.search(line):
                found.append(f"{_where(path, root)}:{number}: {line.strip()[:100]}")
    return found


def missing_paths(paths: list[Path], root: Path = ROOT) -> list[str]:
    found = []
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in PATH.finditer(line):
                named = match.group(1).rstrip(".")
                if named not in NOT_PATHS | BUILT and not PLACEHOLDER.search(named) and not (root / named).exists():
                    found.append(f"{_where(path, root)}:{number}: {named}")
    return found


def test_product_code_names_no_issue_numbers_or_finding_ids() -> None:
    assert issue_references(_files(PRODUCT)) == []


def test_every_path_named_in_code_comments_and_docs_exists() -> None:
    assert missing_paths(_doc_files()) == []


@pytest.mark.parametrize(("text", "issues", "missing"), [
    ("# one referral per launch (issue 8)", 1, 0),
    ('"""Rate limits (finding L8)."""', 1, 0),
    ('revision = "0004_writeback_issue8"', 0, 0),
    ("# see smart_app/no_such_module.py", 0, 1),
    ("# see `smart_app/store/models.py`", 0, 0),
    ("# see docs/decisions/NNNN-title.md", 0, 0),
])
def test_the_checks_can_fail(tmp_path: Path, text: str, issues: int, missing: int) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text(text + "\n")
    assert len(issue_references([probe])) == issues
    assert len(missing_paths([probe])) == missing
