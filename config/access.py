"""Why this process cannot read a file or write a folder, in words that name the folder.

A container runs the app as uid 10001; a key folder mounted from the host with the host's group, or a root-owned
tmpfs, gave a bare ``PermissionError`` (and a 500 on every request). These checks run at start-up instead and say
which folder, its owner and mode, and who this process is (DEPLOY.md, "Containers").
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def _who() -> str:
    groups = sorted({os.getegid(), *os.getgroups()})
    return f"uid {os.geteuid()}, groups {','.join(str(g) for g in groups)}"


def _describe(path: Path) -> str:
    st = path.stat()
    return f"{path} (owner {st.st_uid}:{st.st_gid}, mode {stat.S_IMODE(st.st_mode):04o})"


def _blocked_folder(path: Path) -> str | None:
    """The first folder above ``path`` this process may not enter, described."""
    for folder in reversed(path.parents):
        try:
            if folder.is_dir() and not os.access(folder, os.X_OK):
                return f"folder {_describe(folder)} cannot be entered by this process ({_who()})"
        except OSError:
            return f"folder {folder} cannot be examined by this process ({_who()})"
    return None


def cannot_read(path: Path) -> str | None:
    """None when this process can read the file ``path`` (or it does not exist: the caller says so); else why
    not, naming the folder or the file."""
    path = Path(path).absolute()
    blocked = _blocked_folder(path)
    if blocked:
        return blocked
    if path.exists() and not os.access(path, os.R_OK):
        return f"{_describe(path)} cannot be read by this process ({_who()})"
    return None


def cannot_write_folder(path: Path) -> str | None:
    """None when ``path`` is a folder this process can create files in; else why not, naming the folder."""
    path = Path(path).absolute()
    blocked = _blocked_folder(path)
    if blocked:
        return blocked
    if not path.is_dir():
        return f"{path} is not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"folder {_describe(path)} is not writable by this process ({_who()})"
    return None
