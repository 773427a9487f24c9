"""Every string of the referral page and handout has a Spanish translation in the catalog."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from babel.messages.pofile import read_po

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "smart_app" / "translations" / "es" / "LC_MESSAGES" / "messages.po"


def test_referral_strings_are_translated(tmp_path):
    cfg = tmp_path / "babel.cfg"
    cfg.write_text("[python: smart_app/referral/views.py]\n[jinja2: smart_app/referral/templates/referral/**.html]\n")
    pot = tmp_path / "messages.pot"
    subprocess.run([sys.executable, "-m", "babel.messages.frontend", "extract", "-F", str(cfg), "-k", "p_",
                    "-o", str(pot),
                    "--no-location", "."], check=True, cwd=ROOT, capture_output=True)
    with pot.open("rb") as f:
        wanted = {m.id for m in read_po(f) if m.id}
    assert len(wanted) > 50  # the extraction really found the strings
    with PO.open("rb") as f:
        translated = {m.id for m in read_po(f, locale="es") if m.id and m.string and "fuzzy" not in m.flags}
    assert sorted(wanted - translated) == []
