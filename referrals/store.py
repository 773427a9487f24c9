"""The directory the app serves: loaded from ``tuning.directory_paths`` at start, swapped whole on reload.

A reload builds the new directory and its index completely before one reference swap, so a
request sees either the old directory or the new one, never a mix; a source that fails to load
leaves the current directory in place. Besides files, a store may hold imports kept in the database (named
native YAML texts and the version they make, smart_app/store/directory.py), merged after the files in name order
as the import folder's files are.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from config.current import settings_of
from referrals.errors import DirectoryError, Issue
from referrals.index import DirectoryIndex
from referrals.loaders import load_source
from referrals.loaders.native import _Loader, parse_native
from referrals.model import Directory

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DIRECTORY = ROOT / "config" / "directory" / "boston.yaml"
IMPORT_DIR_NAME = "directory"  # under the app's instance folder: what `ipv-directory import` writes


def default_import_dir(configured: str = "") -> Path:
    """Where `ipv-directory import` writes: the deployment's ``tuning.directory_import_dir``, else
    instance/directory/."""
    return Path(configured or ROOT / "instance" / IMPORT_DIR_NAME)


def configured_paths(paths: Sequence[str] = (), import_dir: str = "") -> list[Path]:
    """The deployment's ``tuning.directory_paths``; default: the Boston directory plus every file
    `ipv-directory import` placed in the import folder (in name order)."""
    if paths:
        return [Path(p).expanduser() for p in paths if str(p).strip()]
    imported = default_import_dir(import_dir)
    # Hidden files are imports still being written (see cli.cmd_import).
    extra = sorted(p for p in imported.glob("*.yaml") if not p.name.startswith(".")) if imported.is_dir() else []
    return [DEFAULT_DIRECTORY, *extra]


def merge(directories: list[Directory]) -> Directory:
    """Later sources replace earlier services with the same id (an import updates an entry)."""
    if len(directories) == 1:
        return directories[0]
    by_id: dict[str, Any] = {}
    for d in directories:
        for s in d.services:
            by_id.pop(s.id, None)
            by_id[s.id] = s
    first = directories[0]
    return Directory(services=list(by_id.values()), timezone=first.timezone,
                     sources=[src for d in directories for src in d.sources], extras=dict(first.extras))


def parse_imported(name: str, text: str) -> Directory:
    """An import kept as native YAML text (what `ipv-directory import` writes), named ``name``."""
    where = f"import {name}"
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (the C safe loader)
    except yaml.YAMLError as exc:
        raise DirectoryError([Issue(where, "", f"not valid YAML: {getattr(exc, 'problem', None) or exc}")]) from None
    if not isinstance(data, dict):
        raise DirectoryError([Issue(where, "", "top level must be a mapping")])
    return parse_native(data, where)


def build(paths: list[Path], imported: Sequence[tuple[str, str]] = ()) -> DirectoryIndex:
    """Load every source (then every ``imported`` (name, text)) and index the result; DirectoryError lists the
    problems of all sources."""
    if not paths:
        raise DirectoryError([Issue("DIRECTORY_PATHS", "", "no directory source configured")])
    loaded, issues = [], []
    for p in paths:
        try:
            loaded.append(load_source(p))
        except DirectoryError as exc:
            issues.extend(exc.issues)
    for name, text in imported:
        try:
            loaded.append(parse_imported(name, text))
        except DirectoryError as exc:
            issues.extend(exc.issues)
    if issues:
        raise DirectoryError(issues)
    return DirectoryIndex(merge(loaded))


class DirectoryStore:
    def __init__(self, paths: list[Path]):
        self.paths = list(paths)
        self.imported: list[tuple[str, str]] = []
        self.version = 0  # of the database's imports this store holds (0: none)
        self._index: DirectoryIndex | None = None
        self._lock = threading.Lock()

    @property
    def index(self) -> DirectoryIndex:
        current = self._index
        if current is None:
            with self._lock:
                if self._index is None:
                    self._index = build(self.paths, self.imported)
                current = self._index
        return current

    def reload(self, paths: list[Path] | None = None, imported: Sequence[tuple[str, str]] | None = None,
               version: int | None = None) -> DirectoryIndex:
        """Build fully, then swap; on error the old directory stays and the error propagates."""
        new_paths = list(paths) if paths is not None else self.paths
        new_imported = list(imported) if imported is not None else self.imported
        fresh = build(new_paths, new_imported)
        with self._lock:
            self._index = fresh
            self.paths, self.imported = new_paths, new_imported
            if version is not None:
                self.version = version
        return fresh


def store_for(app: Any) -> DirectoryStore:
    """The app's store (created on first use from its settings' ``directory_paths``)."""
    store = app.extensions.get("ipv_directory")
    if store is None:
        settings = settings_of(app)
        store = DirectoryStore(configured_paths(settings.directory_paths, settings.directory_import_dir))
        app.extensions["ipv_directory"] = store
    return store
