"""Does the patient need an interpreter? Asked once, on the consent page, and only when the EHR did not say.

The EHR says it with the US Core interpreter-needed extension on the Encounter or the Patient (fhir/context.py reads
both; the Encounter's wins). When neither carries it the consent page asks the clinician (yes / no, and the
language), so social work knows before the first call whether to book an interpreter. An unanswered question does
not hold the referral back (a referral that reaches social work matters more): it is stored as not recorded, and
the queue says so. The answer goes into the referral's encrypted summary (``interpreter_needed``,
``interpreter_language`` as a language code, ``interpreter_source``: ehr | asked) and the launch keeps it, so a page
shown again keeps the answer instead of asking again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from babel import Locale, UnknownLocaleError

# Offered in the question: the languages most often interpreted for in Boston-area hospitals, then "other". The
# patient's own language (from the EHR) is offered first and chosen by default when it is not English.
LANGUAGES = ("es", "pt", "ht", "kea", "zh", "yue", "vi", "ar", "ru", "fr", "so", "km", "ko", "it", "pl", "hi", "ne",
             "am", "asl")
OTHER = "other"
YES, NO = "yes", "no"


@dataclass(frozen=True)
class Answer:
    needed: bool | None  # None: not answered yet
    language: str | None
    source: str  # ehr | asked | none


def from_ehr(context: dict[str, Any]) -> bool | None:
    """What the EHR said (the Encounter's extension, else the Patient's); None when neither says."""
    said = ((context or {}).get("encounter") or {}).get("interpreter_needed")
    if said is None:
        said = ((context or {}).get("patient") or {}).get("interpreter_needed")
    return said if isinstance(said, bool) else None


def patient_language(context: dict[str, Any]) -> str | None:
    lang = (((context or {}).get("patient") or {}).get("language") or "").strip()
    return lang or None


@lru_cache(maxsize=256)  # Babel parses the locale data anew each time; the consent page names twenty languages twice
def language_name(code: str | None) -> str:
    if not code:
        return ""
    if code == OTHER:
        return "Other language"
    if code == "asl":
        return "American Sign Language"
    try:
        return Locale.parse(code.replace("-", "_")).get_display_name("en") or code
    except (UnknownLocaleError, ValueError):
        return code


def options(context: dict[str, Any]) -> list[tuple[str, str]]:
    """The languages offered: the patient's own first (when the EHR names one), then the list, then "other"."""
    own = own_option(context)
    return ([own] if own else []) + list(listed_options())


def own_option(context: dict[str, Any]) -> tuple[str, str] | None:
    """The patient's own language (code, name) when the EHR names one the list does not: offered first."""
    own = patient_language(context)
    return (own, language_name(own)) if own and own not in LANGUAGES else None


@lru_cache(maxsize=1)
def listed_options() -> tuple[tuple[str, str], ...]:
    """The list and "other", (code, name): the same for every patient."""
    return tuple((c, language_name(c)) for c in (*LANGUAGES, OTHER))


def default_language(context: dict[str, Any]) -> str | None:
    own = patient_language(context)
    return own if own and not own.lower().startswith("en") else None


def answer(form: Any, context: dict[str, Any], kept: dict[str, Any] | None) -> Answer:
    """The answer for this referral: the EHR's, else the form's (or the one kept from an earlier showing)."""
    said = from_ehr(context)
    if said is not None:
        return Answer(said, patient_language(context) if said else None, "ehr")
    choice = form.get("interpreter") or (kept or {}).get("choice")
    language = (form.get("interpreter_language") or (kept or {}).get("language") or "").strip()
    if choice == NO:
        return Answer(False, None, "asked")
    offered = {code for code, _name in options(context)}
    if choice == YES:
        return Answer(True, language if language in offered else default_language(context), "asked")
    return Answer(None, language if language in offered else default_language(context), "none")


def kept_form(a: Answer) -> dict[str, Any]:
    """What the launch keeps of an answer given on the page (so it is not asked again)."""
    if a.source != "asked":
        return {}
    return {"choice": YES if a.needed else NO, "language": a.language}


def summary_part(a: Answer) -> dict[str, Any]:
    return {"interpreter_needed": a.needed, "interpreter_language": a.language, "interpreter_source": a.source}
