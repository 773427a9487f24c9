"""Phone links: one formatter for every number the app shows, the extension dialled after a pause
(docs/decisions/0004-tel-links.md), and no number on a page that is not a link."""

from __future__ import annotations

import re
from datetime import datetime
from html.parser import HTMLParser
from zoneinfo import ZoneInfo

import pytest

from referrals.model import Phone
from referrals.phones import display, numbers_in, split, tel_uri
from tests.screening.test_flow import Flow, bwh_context, da5

pytestmark = pytest.mark.handoff

NY = ZoneInfo("America/New_York")
THANKSGIVING_9PM = datetime(2026, 11, 26, 21, 0, tzinfo=NY)
FREQUENTLY = "LA6482-9"
# The only shapes a href may have: an E.164 number (extension after a pause) or an N11 code such as 911.
HREF = re.compile(r"^tel:(\+\d{11}(,\d{1,8})?|\d{3})$")


@pytest.mark.parametrize(("text", "ext", "href"), [
    ("1-617-732-5520", "31808", "tel:+16177325520,31808"),
    ("1-617-732-5520 ext. 31808", None, "tel:+16177325520,31808"),   # as older referrals stored it
    ("1-617-732-5520, ext. 31808", None, "tel:+16177325520,31808"),  # as the seed page writes it
    ("(617) 732-5520 x31808", None, "tel:+16177325520,31808"),
    ("+1 617 732 5520;ext=31808", None, "tel:+16177325520,31808"),   # RFC 3966 in, the pause form out
    ("617.732.8753", None, "tel:+16177328753"),
    ("1-877-785-2020", None, "tel:+18777852020"),
    ("+44 20 7946 0958", None, "tel:+442079460958"),
    ("911", None, "tel:911"),
])
def test_tel_uri_is_one_format_with_the_extension_after_a_pause(text, ext, href):
    assert tel_uri(text, ext) == href
    assert HREF.match(href) or href.startswith("tel:+44")


@pytest.mark.parametrize("text", ["thehotline.org", "1-800-FLOWERS", "12345", "", None, "+"])
def test_what_a_phone_cannot_dial_gets_no_link(text):
    assert tel_uri(text) is None


def test_display_keeps_the_directorys_spelling_and_split_reads_it_back():
    assert display("1-617-732-5520", "31808") == "1-617-732-5520 ext. 31808"
    assert display("1-617-732-8753") == "1-617-732-8753"
    assert split("1-617-732-5520 ext. 31808") == ("1-617-732-5520", "31808")
    assert split("1-617-732-8753") == ("1-617-732-8753", None)
    pager = Phone("1-617-732-5520", channel="pager", ext="31808")
    assert (pager.dial(), pager.tel()) == ("1-617-732-5520 ext. 31808", "tel:+16177325520,31808")
    assert Phone("thehotline.org", channel="chat").tel() is None


def test_numbers_in_a_sentence_are_found_with_their_extension():
    text = "Call MA SafeLink at 1-877-785-2020 or page 1-617-732-5520, ext. 31808 after hours; room 1234 is not one."
    assert [f.href for f in numbers_in(text)] == ["tel:+18777852020", "tel:+16177325520,31808"]
    assert text[numbers_in(text)[1].start:numbers_in(text)[1].end] == "1-617-732-5520, ext. 31808"


# ---------------------------------------------------------------------------- on the pages


class _Text(HTMLParser):
    """The page's visible text outside links, and every tel: href."""

    def __init__(self) -> None:
        super().__init__()
        self.outside: list[str] = []
        self.hrefs: list[str] = []
        self._in_link = 0
        self._skip = 0

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._in_link += 1
            href = dict(attrs).get("href") or ""
            if href.startswith("tel:"):
                self.hrefs.append(href)
        elif tag in ("script", "style", "title"):
            self._skip += 1

    def handle_endtag(self, tag):
        if tag == "a":
            self._in_link -= 1
        elif tag in ("script", "style", "title"):
            self._skip -= 1

    def handle_data(self, data):
        if not self._in_link and not self._skip:
            self.outside.append(data)


def unlinked_numbers(html: str) -> tuple[list[str], list[str]]:
    """(numbers shown outside a tel: link, every tel: href)."""
    parser = _Text()
    parser.feed(html)
    text = " ".join(parser.outside)
    return [text[f.start:f.end] for f in numbers_in(text)], parser.hrefs


@pytest.fixture
def thanksgiving_night(app):
    app.extensions["clock"] = lambda: THANKSGIVING_9PM
    yield
    app.extensions.pop("clock", None)


def test_every_number_on_the_result_referral_and_handout_pages_is_a_link_in_one_format(client, make_launch,
                                                                                       thanksgiving_night):
    flow = Flow(client, make_launch(client, context=bwh_context()))
    flow.gate()
    flow.screen({"instrument": "hits", "q-hurt": FREQUENTLY, "q-insult": FREQUENTLY, "q-threaten": FREQUENTLY,
                 "q-scream": FREQUENTLY})
    flow.danger(da5("escalation", "weapon", "fear-for-life"))
    pages = {"result": flow.result(),
             "referrals": flow.get(f"/l/{flow.lid}/referrals").get_data(as_text=True),
             "handout": flow.get(f"/l/{flow.lid}/handout?layout=page").get_data(as_text=True)}
    for name, html in pages.items():
        unlinked, hrefs = unlinked_numbers(html)
        assert unlinked == [], name
        assert hrefs and all(HREF.match(h) for h in hrefs), (name, [h for h in hrefs if not HREF.match(h)])
    # After hours on a holiday the site's program is its pager, and its extension is dialled.
    assert 'href="tel:+16177325520,31808"' in pages["result"].split('data-testid="urgent"', 1)[1]
    assert 'href="tel:+16177325520,31808"' in pages["referrals"]
    # The resource list links the hotlines and this site's program main line (Passageway).
    resources = pages["result"].split('data-testid="resources"', 1)[1].split("</ul>", 1)[0]
    assert 'href="tel:+16177328753"' in resources and 'href="tel:+18777852020"' in resources
