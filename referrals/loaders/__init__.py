"""Directory loaders. Each returns a complete, validated ``Directory`` or raises ``DirectoryError``
listing every problem (file, row or path, reason); nothing half-loaded ever escapes a loader."""

from __future__ import annotations

from pathlib import Path

from referrals.errors import DirectoryError, Issue
from referrals.memory import paused_gc
from referrals.model import Directory

FORMATS = ("native", "hsds-json", "hsds-csv", "fhir")


def detect_format(path: Path) -> str:
    """Guess a source's format from its name and first bytes."""
    if path.is_dir() or path.name == "datapackage.json":
        return "hsds-csv"
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        return "native"
    if suffix == ".json":
        head = path.read_text(encoding="utf-8", errors="replace")[:4096]
        if '"resourceType"' in head:
            return "fhir"
        if '"format"' in head and "ipv-directory/" in head:
            return "native"
        return "hsds-json"
    raise DirectoryError([Issue(str(path), "", "unknown format: use .yaml, .json or an HSDS datapackage folder")])


def load_source(path: str | Path, fmt: str = "auto", timezone: str = "America/New_York") -> Directory:
    """Load any supported source into a validated Directory."""
    try:
        with paused_gc():
            return _load(Path(path), fmt, timezone)
    except DirectoryError:
        raise
    except (TypeError, AttributeError, ValueError, KeyError, IndexError, RecursionError, OSError) as exc:
        # Last line of defence: a shape no check foresaw is still a refused file, never a crash.
        raise DirectoryError([Issue(str(path), "", f"cannot be read as a directory ({exc.__class__.__name__})")]) \
            from exc


def _load(p: Path, fmt: str, timezone: str) -> Directory:
    if not p.exists():
        raise DirectoryError([Issue(str(p), "", "file not found")])
    if fmt == "auto":
        fmt = detect_format(p)
    if fmt == "native":
        from referrals.loaders.native import load_native

        return load_native(p)
    if fmt == "hsds-json":
        from referrals.loaders.hsds import load_hsds_json

        return load_hsds_json(p, timezone=timezone)
    if fmt == "hsds-csv":
        from referrals.loaders.hsds import load_hsds_datapackage

        return load_hsds_datapackage(p, timezone=timezone)
    if fmt == "fhir":
        from referrals.loaders.fhir_bundle import load_fhir_bundle

        return load_fhir_bundle(p, timezone=timezone)
    raise DirectoryError([Issue(str(p), "", f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")])
