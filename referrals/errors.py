"""Why a directory file was refused: every problem names the file, the row or path, and the reason."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    file: str
    where: str  # JSON path ("services[3].phones[0].number"), "row 12, column name", ...
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.where}: {self.reason}" if self.where else f"{self.file}: {self.reason}"


class DirectoryError(Exception):
    """A directory source that cannot be loaded. Nothing of it is used."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        shown = "\n".join(f"  {i}" for i in issues[:50])
        more = f"\n  ... and {len(issues) - 50} more" if len(issues) > 50 else ""
        super().__init__(f"{len(issues)} problem(s):\n{shown}{more}")


class Collector:
    """Gathers issues while a loader walks a file, so one run reports all of them."""

    def __init__(self, file: str, limit: int = 1000):
        self.file = file
        self.issues: list[Issue] = []
        self.limit = limit

    def add(self, where: str, reason: str) -> None:
        if len(self.issues) < self.limit:
            self.issues.append(Issue(self.file, where, reason))

    def raise_if_any(self) -> None:
        if self.issues:
            raise DirectoryError(self.issues)
