"""One question per screen, from the instrument the clinician chose: what the tablet shows and what it reads aloud.

The words come from the Questionnaire file in the patient's language (English where the file has no text for it);
``listen_text`` is the exact text the "Listen" audio says, built the same way when the audio is generated at build
time (smart_app/kiosk/audio.py), so a file found by its hash says exactly what the screen shows.
"""

from __future__ import annotations

from dataclasses import dataclass

from fhir.questionnaires import IncompleteAnswers, Instrument, Item, ScreenResult
from smart_app.kiosk.sessions import Progress


@dataclass(frozen=True)
class Option:
    code: str
    text: str


@dataclass(frozen=True)
class Screen:
    """One question as the tablet shows it."""

    number: int
    total: int
    link_id: str
    stem: str  # the instrument's lead-in ("In the past 12 months, how often did your partner..."), may be empty
    text: str
    options: tuple[Option, ...]
    listen: str
    lang: str  # the language the words are in (the patient's, or English where the file has none)


def _lang_of(texts: dict[str, str], lang: str) -> str:
    return lang if lang in texts else "en"


def stem(inst: Instrument, lang: str) -> str:
    return " ".join(i.label(lang) for i in inst.items if i.type == "display")


def listen_text(inst: Instrument, item: Item, lang: str) -> str:
    """What "Listen" says for ``item``: the lead-in, the question, then each answer choice."""
    parts = [stem(inst, lang), item.label(lang), *(a.text(lang) for a in item.answers)]
    return ". ".join(p.strip().rstrip(".?:") for p in parts if p.strip()) + "."


def screen_at(inst: Instrument, progress: Progress) -> Screen | None:
    """The first question not yet answered, or None when every question has an answer."""
    questions = inst.questions
    for n, item in enumerate(questions, start=1):
        if item.link_id not in progress.answers:
            lang = progress.language
            return Screen(
                number=n,
                total=len(questions),
                link_id=item.link_id,
                stem=stem(inst, lang),
                text=item.label(lang),
                options=tuple(Option(a.code, a.text(lang)) for a in item.answers),
                listen=listen_text(inst, item, lang),
                lang=_lang_of(item.text, lang),
            )
    return None


def answer(inst: Instrument, progress: Progress, link_id: str, code: str) -> bool:
    """Record the answer to the question on screen; False when it is not that question or not one of its choices."""
    current = screen_at(inst, progress)
    if current is None or current.link_id != link_id or code not in {o.code for o in current.options}:
        return False
    progress.answers[link_id] = code
    return True


def step_back(inst: Instrument, progress: Progress) -> None:
    """Back: the previous question is asked again (its answer forgotten)."""
    answered = [q.link_id for q in inst.questions if q.link_id in progress.answers]
    if answered:
        progress.answers.pop(answered[-1])


def score(inst: Instrument, progress: Progress, *, declined: bool) -> ScreenResult | None:
    """The scored screen once complete (or declined), else None."""
    try:
        return inst.score(dict(progress.answers), declined=declined)
    except IncompleteAnswers:
        return None
