"""Reading a settings file: YAML into a model whose unknown keys are errors naming the key and the file.

Every model read from a file (the deployment, its ``tuning:`` block, the EHR profile, each block inside them)
forbids keys it does not define, so a misspelt or retired key stops start-up instead of being ignored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from config.access import cannot_read

M = TypeVar("M", bound=BaseModel)
# libyaml's safe loader where PyYAML was built with it (the same documents, a fraction of the start-up CPU).
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# Keys that were settings once, with what to do instead: the error says it rather than only "unknown".
RETIRED_KEYS: dict[str, str] = {
    "create_returns_resource": "nothing read it: labels are checked from any create answer that carries them, "
                               "else read back (read_back)",
    "advocate_site": "nothing read it: the urgent box takes the advocate programs from the directory and "
                     "default_programs",
    "client_secret": "a secret is never kept in the deployment file: set CLIENT_SECRET in the environment",
    "worklist.urgent_contact_hours": "now worklist.due.urgent (e.g. '24 hours')",
    "worklist_urgent_contact_hours": "now worklist.due.urgent (e.g. '24 hours')",
    "worklist.memory_days": "now tuning.worklist_memory_days",
    "worklist.closed_retention_days": "now tuning.worklist_closed_retention_days",
}


class Strict(BaseModel):
    """Base of every settings model read from a file: unknown keys are errors; values are not changed later."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SettingsError(ValueError):
    """Settings that cannot be used: each line names the setting and where it was read (file or environment)."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


def read_yaml(path: Path, what: str) -> dict[str, Any]:
    """A YAML mapping from ``path``; SettingsError naming the file when it is missing or not a mapping, and the
    folder when this process may not read it."""
    unreadable = cannot_read(path)
    if unreadable:
        raise SettingsError([f"{what} file {path}: {unreadable}"])
    if not path.is_file():
        raise SettingsError([f"{what} file not found: {path}"])
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=SAFE_LOADER)  # noqa: S506 - a safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SettingsError([f"{path}: not readable as YAML ({type(exc).__name__}: {exc})"]) from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SettingsError([f"{path}: must be a mapping of keys to values"])
    return raw


def validate(model: type[M], data: Mapping[str, Any], source: str, *, prefix: str = "") -> M:
    """``model`` from ``data``; a SettingsError lists every bad key as ``source: key: what is wrong``."""
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise SettingsError(problems(exc, source, prefix=prefix)) from None


def problems(exc: ValidationError, source: str, *, prefix: str = "") -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        key = prefix + ".".join(str(part) for part in err["loc"])
        if err["type"] == "extra_forbidden":
            hint = RETIRED_KEYS.get(key) or RETIRED_KEYS.get(key.rsplit(".", 1)[-1]) or "not a setting"
            out.append(f"{source}: {key}: unknown key ({hint})")
        else:
            message = err["msg"]
            if message.startswith("Value error, "):
                message = message[len("Value error, "):]
            out.append(f"{source}: {key}: {message}" if key else f"{source}: {message}")
    return out
