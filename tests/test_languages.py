"""Every catalogue compiles cleanly (``msgfmt -c``: no duplicate definitions, placeholders and headers right)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.i18n

ROOT = Path(__file__).resolve().parents[1]
TRANSLATIONS = ROOT / "smart_app" / "translations"
CATALOGS = sorted(TRANSLATIONS.glob("*/LC_MESSAGES/messages.po"))
MSGID = re.compile(r'^(?:#~ )?msgid "(.*)"$')
CONT = re.compile(r'^(?:#~ )?"(.*)"$')


def test_there_are_catalogues():
    assert {p.parts[-3] for p in CATALOGS} >= {"es", "pt"}


def _msgids(po: Path) -> list[str]:
    """Every msgid in the file, obsolete (``#~``) ones included: what msgfmt counts as a definition."""
    ids: list[str] = []
    current: list[str] | None = None
    for line in po.read_text(encoding="utf-8").splitlines():
        m = MSGID.match(line)
        if m:
            current = [m.group(1)]
            ids.append("")
            continue
        c = CONT.match(line)
        if current is not None and c:
            current.append(c.group(1))
            ids[-1] = "".join(current)
            continue
        if current is not None:
            ids[-1] = "".join(current)
            current = None
    return [i for i in ids if i]


@pytest.mark.parametrize("po", CATALOGS, ids=lambda p: p.parts[-3])
def test_no_message_is_defined_twice(po):
    ids = _msgids(po)
    assert sorted({i for i in ids if ids.count(i) > 1}) == []


@pytest.mark.parametrize("po", CATALOGS, ids=lambda p: p.parts[-3])
def test_msgfmt_accepts_the_catalogue(po, tmp_path):
    msgfmt = shutil.which("msgfmt")
    if msgfmt is None:
        pytest.skip("GNU gettext's msgfmt is not installed")
    run = subprocess.run([msgfmt, "-c", "-o", str(tmp_path / "out.mo"), str(po)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
