"""Phone numbers in templates: every number a page shows is a link that dials it (referrals/phones.py formats).

``tel`` gives the href of a number as text (``{{ "1-877-785-2020"|tel }}``); ``phone_links`` links every number
inside a sentence (a reason, the 209A text); the ``phone`` macro in ``_phone.html`` renders one number as a link.
"""

from __future__ import annotations

from flask import Flask
from markupsafe import Markup, escape

from referrals.phones import numbers_in, tel_uri


def phone_links(text: str | None) -> Markup:
    """``text`` escaped, with each number in it a ``tel:`` link (a prose number is dialled like any other)."""
    text = str(text or "")
    out, at = [], 0
    for found in numbers_in(text):
        out.append(escape(text[at:found.start]))
        out.append(Markup('<a href="{}" class="phone">{}</a>').format(found.href, text[found.start:found.end]))
        at = found.end
    out.append(escape(text[at:]))
    return Markup("").join(out)


def init_app(app: Flask) -> None:
    app.jinja_env.filters["tel"] = tel_uri
    app.jinja_env.filters["phone_links"] = phone_links
