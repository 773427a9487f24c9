"""Hygiene for text an EHR (or any outside party) supplies before it is shown or logged.

Control characters (CR/LF forge log lines), Unicode format characters such as the bidi overrides
U+202A..U+202E and U+2066..U+2069 (they reorder what a reader sees: "Trojan Source", CVE-2021-42574)
and unpaired surrogates are removed; the rest is capped. Used for error text from the token endpoint,
the callback's ``error_description``, and names shown in the banner and the social-work queue.
"""

from __future__ import annotations

import unicodedata

DEFAULT_LIMIT = 200


def clean_text(value: object, limit: int = DEFAULT_LIMIT) -> str:
    """``value`` as one line of plain text: no control (Cc), format (Cf, bidi included), surrogate (Cs),
    private-use (Co) or unassigned (Cn) characters; runs of whitespace become one space; at most
    ``limit`` characters (an ellipsis marks a cut)."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    text = text[: limit * 4]  # bound the work on hostile input before looking at each character
    out: list[str] = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] == "C":
            if ch in "\t\n\r\x0b\x0c":
                out.append(" ")
            continue
        if cat in ("Zl", "Zp"):
            out.append(" ")
            continue
        out.append(ch)
    cleaned = " ".join("".join(out).split())
    if len(cleaned) > limit:
        cleaned = cleaned[: max(limit - 1, 0)].rstrip() + "…"
    return cleaned
