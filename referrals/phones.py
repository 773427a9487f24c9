"""Phone numbers as the app shows and dials them: the one formatter for every number on every page.

``display`` is what a person reads ("1-617-732-5520 ext. 31808", the directory's own spelling); ``tel_uri`` is
the link's href. The number part is an E.164 global number (``+16177325520``); an extension is dialled after a
pause, ``tel:+16177325520,31808``, not with RFC 3966's ``;ext=31808``: docs/decisions/0004-tel-links.md says why.
``numbers_in`` finds the numbers inside a sentence, so prose can link them too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COUNTRY_CODE = "1"  # North American Numbering Plan: the directory's numbers are written without it or as "1-..."
NATIONAL_DIGITS = 10  # NANP: area code (3) + exchange (3) + line (4)
SHORT_CODE_DIGITS = (3,)  # N11 service codes: 911, 211, 988 (dialled as they are)
E164_MAX_DIGITS = 15  # ITU-T E.164: at most 15 digits after the "+"
EXTENSION_PAUSE = ","  # the dial-string pause before the extension (ADR 0004)

# "ext. 31808", "ext 31808", "extension 31808", "x31808", ";ext=31808", ", 31808" at the end of a number.
_EXTENSION = re.compile(r"\s*(?:[,;]?\s*(?:ext(?:ension)?\.?|x)\s*=?\s*|,\s*)(\d{1,8})\s*$", re.IGNORECASE)
# A NANP number in running text, optionally with "1-" or "+1 " in front and an extension after it.
_IN_TEXT = re.compile(
    r"(?<![\w+])(?:\+?1[-.\s])?\(?[2-9]\d{2}\)?[-.\s]\d{3}[-.\s]\d{4}"
    r"(?:,?\s*(?:ext(?:ension)?\.?|x)\s*\d{1,8})?(?!\w)", re.IGNORECASE)


@dataclass(frozen=True)
class Found:
    """A number inside a sentence: where it is, and its href."""

    start: int
    end: int
    href: str


def split(text: str) -> tuple[str, str | None]:
    """("1-617-732-5520", "31808") from "1-617-732-5520 ext. 31808"; a number without an extension keeps None."""
    match = _EXTENSION.search(text)
    if match is None or not re.search(r"\d", text[:match.start()]):
        return text.strip(), None
    return text[:match.start()].strip(), match.group(1)


def display(number: str, ext: str | None = None) -> str:
    """The number as the page shows it: the directory's spelling, then " ext. NNNN" when there is one."""
    return f"{number} ext. {ext}" if ext else number


def tel_uri(number: str | None, ext: str | None = None) -> str | None:
    """The ``tel:`` href for a number (and extension); None when it is not a number a phone can dial.

    ``number`` may carry its extension ("1-617-732-5520 ext. 31808", as stored with older referrals) when
    ``ext`` is not given. Letters (a chat address, a vanity number) are not dialled: no link."""
    if not number:
        return None
    if ext is None:
        number, ext = split(number)
    if re.search(r"[A-Za-z]", number):
        return None
    digits = re.sub(r"\D", "", number)
    if number.lstrip().startswith("+"):
        dialled = "+" + digits if 0 < len(digits) <= E164_MAX_DIGITS else None
    elif len(digits) == NATIONAL_DIGITS:
        dialled = f"+{COUNTRY_CODE}{digits}"
    elif len(digits) == NATIONAL_DIGITS + len(COUNTRY_CODE) and digits.startswith(COUNTRY_CODE):
        dialled = "+" + digits
    elif len(digits) in SHORT_CODE_DIGITS:
        dialled = digits
    else:
        dialled = None
    if dialled is None:
        return None
    extension = re.sub(r"\D", "", ext or "")
    return f"tel:{dialled}{EXTENSION_PAUSE + extension if extension else ''}"


def numbers_in(text: str) -> list[Found]:
    """Every dialable NANP number in ``text`` (with its extension), in order."""
    found = []
    for match in _IN_TEXT.finditer(text):
        href = tel_uri(match.group(0))
        if href:
            found.append(Found(match.start(), match.end(), href))
    return found
