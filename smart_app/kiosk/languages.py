"""The languages a patient can choose on the tablet: every language of the app's registry (config/languages.yaml),
each named in itself, in the registry's order."""

from __future__ import annotations

from dataclasses import dataclass

from config import languages as registry


@dataclass(frozen=True)
class Choice:
    code: str
    name: str  # in its own language: "Español"
    dir: str  # ltr | rtl


def choices() -> list[Choice]:
    return [Choice(lang.code, lang.name, lang.dir) for lang in registry.languages()]


def valid(code: str | None) -> bool:
    return code is not None and registry.language(code) is not None


def direction(code: str) -> str:
    return registry.direction(code)
