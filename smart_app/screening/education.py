"""Universal education at the start of every check-in: a short script the clinician reads and the discreet wallet
card, offered to every patient whatever the screen shows, including when the screen is skipped because the patient
is not alone. The approach and its evidence are in ``smart_app/screening/universal_education.yaml`` (Futures Without
Violence's CUES; Miller et al., Contraception 2016); the words are ours.

The lines are read aloud: the patient's language, with the clinician's beneath (smart_app/ops/i18n.py
``read_aloud``). They are in the translation catalogue (marked with ``N_`` here, translated where they are read), so
every language the app has carries them. When someone else is in the room the full script is not read: only the
card's neutral line, which says nothing a partner could object to.

Only "offered" is recorded, once per launch (smart_app/report/events.py ``education_offered``), never what the
patient said or whether they took the card.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from smart_app.ops.i18n import ReadAloud, read_aloud

SOURCES_FILE = Path(__file__).with_name("universal_education.yaml")


def N_(message: str) -> str:  # noqa: N802 - gettext's name for "extract this, translate it later"
    return message


# Confidentiality, universal education, support: in that order, about 30 seconds read aloud.
SCRIPT = (
    N_("Before we start: what we talk about stays between you and your care team. The only exceptions are the few "
       "things the law makes me report, and I would tell you first."),
    N_("We give this small card to everyone. How people treat us at home affects our health, so the card has free, "
       "private numbers you can call any time, for yourself or for someone you care about."),
    N_("You do not have to tell me anything. If something on it sounds familiar, now or later, I am a safe person "
       "to talk to."),
)
# The patient is not alone: the card's neutral line only (the same words the result page uses).
NOT_ALONE = N_("We give this card to everyone. The numbers are free and confidential, for you or for someone you "
               "know.")


def script(alone: bool = True) -> list[ReadAloud]:
    """The lines to read, in the patient's language with the clinician's beneath."""
    return [read_aloud(line) for line in (SCRIPT if alone else (NOT_ALONE,))]


@cache
def sources() -> list[dict[str, Any]]:
    """The approach and the evidence (the page names them beneath the script)."""
    return list(yaml.safe_load(SOURCES_FILE.read_text(encoding="utf-8"))["sources"])


def offered(data: dict[str, Any]) -> bool:
    return bool((data.get("education") or {}).get("offered"))
