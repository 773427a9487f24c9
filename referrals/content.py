"""Patient-facing texts of the referral page and handout (config/directory/content.yaml):
the 209A protective-order information and the safety planning ideas, both from the seed page."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from config.languages import codes
from referrals.errors import DirectoryError, Issue

CONTENT_FILE = Path(__file__).resolve().parents[1] / "config" / "directory" / "content.yaml"
REQUIRED = ("protective_orders", "safety_ideas", "handout")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where PyYAML has it: read at every start


@lru_cache(maxsize=4)
def load_content(path: str = str(CONTENT_FILE)) -> dict[str, Any]:
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_LOADER)  # noqa: S506 - a safe loader
    except (OSError, yaml.YAMLError) as exc:
        raise DirectoryError([Issue(path, "", f"cannot read content: {exc.__class__.__name__}")]) from None
    if not isinstance(data, dict):
        raise DirectoryError([Issue(path, "", "top level must be a mapping")])
    missing = [k for k in REQUIRED if not isinstance(data.get(k), dict)]
    if missing:
        raise DirectoryError([Issue(path, k, "section missing") for k in missing])
    return data


def localise(value: Any, lang: str) -> Any:
    """Replace every {en: ..., es: ...} mapping by the text in ``lang`` (English fallback); the keys that name a
    language are the registry's (config/languages.yaml)."""
    if isinstance(value, dict):
        langs = codes()
        if "en" in value and all(isinstance(v, str) for k, v in value.items() if k in langs):
            rest = {k: v for k, v in value.items() if k not in langs}
            text = value.get(lang) or value["en"]
            if not rest:
                return text
            return {"text": text, **{k: localise(v, lang) for k, v in rest.items()}}
        return {k: localise(v, lang) for k, v in value.items()}
    if isinstance(value, list):
        return [localise(v, lang) for v in value]
    return value
