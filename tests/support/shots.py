"""Where browser tests leave their screenshots: ``IPV_SCREENSHOTS`` when set (a folder to look at after a run),
else the test's own temporary directory."""

from __future__ import annotations

import os
from pathlib import Path


def shots_dir(tmp_path: Path) -> Path:
    chosen = os.environ.get("IPV_SCREENSHOTS")
    path = Path(chosen) if chosen else tmp_path
    path.mkdir(parents=True, exist_ok=True)
    return path
