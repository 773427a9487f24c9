"""The patient languages: one registry (`config/languages.yaml`) that every page, catalogue test and content file
follows, so adding a language is a block there, a catalogue and the texts (smart_app/translations/README.md).

A language's ``code`` is its BCP 47 tag as the pages write it (``lang="ar"``, ``?lang=zh-Hant``); ``locale`` is the
same as Babel names it and as its catalogue folder is called (``zh_Hant``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from config.files import SettingsError, Strict, read_yaml

LANGUAGES_FILE = Path(__file__).resolve().parent / "languages.yaml"
SOURCE = "en"
# Who has checked a translation (as the Questionnaires' translation-status and the content files say it).
REVIEW = re.compile(r"^(machine-drafted|reviewed by \S.*|validated: \S.*)$")
TAG = re.compile(r"^[a-z]{2,3}(-[A-Z][a-z]{3})?$")  # language, optional script: "ar", "zh-Hant"


class Language(Strict):
    code: str = ""
    name: str = Field(description="The language in itself, as the switch shows it.")
    dir: Literal["ltr", "rtl"] = "ltr"
    clinician: bool = False
    reads: Literal["clinician", "interpreter"] = "interpreter"
    review: str = ""
    source: bool = False
    matches: tuple[str, ...] = ()

    @property
    def locale(self) -> str:
        """Babel's identifier and the catalogue's folder name: ``zh_Hant`` for ``zh-Hant``."""
        return self.code.replace("-", "_")

    @property
    def validated(self) -> bool:
        return self.source or self.review.startswith("validated:")


class NextLanguage(Strict):
    english: str
    why: str


class Registry(Strict):
    format: Literal["ipv-languages/1"]
    languages: dict[str, Language]
    next: dict[str, NextLanguage] = {}


def _check(reg: Registry, path: Path) -> list[str]:
    problems = []
    for code, lang in reg.languages.items():
        if not TAG.match(code):
            problems.append(f"{path}: {code}: not a BCP 47 language tag (language, optional script)")
        if not lang.source and not REVIEW.match(lang.review):
            problems.append(
                f"{path}: {code}: review must be machine-drafted, reviewed by <role> or validated: <citation>"
            )
    if SOURCE not in reg.languages or not reg.languages[SOURCE].source:
        problems.append(f"{path}: {SOURCE} must be listed as the source language")
    return problems


@lru_cache(maxsize=2)
def load_registry(path: Path = LANGUAGES_FILE) -> Registry:
    raw = read_yaml(path, "languages")
    try:
        reg = Registry.model_validate(raw)
    except ValidationError as exc:
        raise SettingsError(
            [f"{path}: {'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        ) from None
    problems = _check(reg, path)
    if problems:
        raise SettingsError(problems)
    return reg.model_copy(
        update={"languages": {c: lang.model_copy(update={"code": c}) for c, lang in reg.languages.items()}}
    )


def languages() -> tuple[Language, ...]:
    """Every patient language, English first, in the registry's order."""
    return tuple(load_registry().languages.values())


def codes() -> tuple[str, ...]:
    return tuple(load_registry().languages)


def clinician_codes() -> tuple[str, ...]:
    """The languages a deployment may set as ``clinician_language`` (their whole catalogue is translated)."""
    return _tables().clinician_codes


def translated_codes() -> tuple[str, ...]:
    """Every language but the source: each has a catalogue and its texts in the content files."""
    return tuple(c for c, lang in load_registry().languages.items() if not lang.source)


def language(code: str) -> Language | None:
    return load_registry().languages.get(code)


def direction(code: str | None) -> str:
    """``rtl`` or ``ltr`` for a registered language; ``ltr`` for anything else."""
    found = language(code or "")
    return found.dir if found else "ltr"


def match(tag: str | None) -> str | None:
    """The registered language a Patient.communication tag means ("es-MX" -> "es", "zh-TW" -> "zh-Hant" where
    listed in ``matches``), or None. A script in the tag decides between the scripts of the language it finds
    ("yue-Hans": Cantonese written in Simplified characters -> "zh-Hans")."""
    wanted = (tag or "").strip().replace("_", "-").lower()
    if not wanted:
        return None
    found = _registered(wanted)
    if found:
        return found
    parts = wanted.split("-")
    script = next((p for p in parts[1:] if len(p) == 4 and p.isalpha()), None)
    rest = [p for p in parts if p != script]
    found = _registered("-".join(rest)) or _registered(rest[0])
    if found and script:
        same_language = f"{found.split('-')[0]}-{script}"
        return _registered(same_language) if same_language in _by_code() else found
    return found


def _by_code() -> dict[str, str]:
    return _tables().by_code


@dataclass(frozen=True)
class _Tables:
    registry: Registry
    clinician_codes: tuple[str, ...]
    by_code: dict[str, str]  # lower-cased code -> code
    by_match: dict[str, str]  # lower-cased ``matches`` entry -> the first language (in the file's order) listing it


_TABLES: list[_Tables] = []


def _tables() -> _Tables:
    """The registry's look-up tables, made once per loaded registry (every page asks for the clinician's language
    and matches the patient's tag; the registry is a file read once)."""
    reg = load_registry()
    if not _TABLES or _TABLES[0].registry is not reg:
        by_match: dict[str, str] = {}
        for lang in reg.languages.values():
            for m in lang.matches:
                by_match.setdefault(m.lower(), lang.code)
        _TABLES[:] = [_Tables(reg, tuple(c for c, lang in reg.languages.items() if lang.clinician),
                              {c.lower(): c for c in reg.languages}, by_match)]
    return _TABLES[0]


def _registered(lowered: str) -> str | None:
    """The language whose code or one of whose ``matches`` is exactly ``lowered``."""
    tables = _tables()
    return tables.by_code.get(lowered) or tables.by_match.get(lowered)
