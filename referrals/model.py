"""The in-memory directory model every loader produces and the ranking reads.

One ``Service`` is one program or hotline (what a patient calls); its ``sites`` are the
places it works from and the hospitals/clinics it serves. Texts a patient sees are
bilingual (``Text``: language code -> string) so the page and the handout need no
second lookup.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from referrals import phones

# Needs a patient may state, and the services a directory entry can offer.
NEEDS = (
    "safety-planning", "counselling", "legal", "shelter", "housing", "sexual-assault",
    "support-groups", "accompaniment", "crisis", "advocacy", "court-accompaniment",
)
# Needs the referral page asks about (the brief: legal/209A, shelter, counselling, sexual assault).
ASKED_NEEDS = ("legal", "shelter", "counselling", "sexual-assault")
DAYS = ("MO", "TU", "WE", "TH", "FR", "SA", "SU")
CHANNELS = ("voice", "chat", "text", "pager", "tty")

Text = dict[str, str]
# Slotted dataclasses (no per-object __dict__), mutable only while a loader builds them: ``finish`` in
# referrals/loaders/common.py then compacts each directory (shared Hours, frozensets, interned codes), and
# nothing changes a loaded directory (a reload builds a new one). See ``compact_services``.


def text_in(text: Text | None, lang: str) -> str:
    """The text in ``lang``, falling back to English, then to any language given."""
    if not text:
        return ""
    return text.get(lang) or text.get("en") or next(iter(text.values()))


@dataclass(frozen=True, slots=True)
class Interval:
    """Open from ``opens`` to ``closes`` (minutes after midnight, local time) on ``days``.
    ``closes`` <= ``opens`` means the interval runs past midnight (e.g. chat 8am-3am)."""

    days: tuple[str, ...]
    opens: int
    closes: int


@dataclass(slots=True)
class Hours:
    """Weekly hours in the directory's time zone. ``always`` = 24/7; ``known`` False when
    the source does not say (we never claim a service is open when we do not know)."""

    always: bool = False
    weekly: list[Interval] = field(default_factory=list)
    known: bool = True
    note: Text = field(default_factory=dict)

    @classmethod
    def unknown(cls) -> Hours:
        return cls(known=False)


@dataclass(slots=True)
class Phone:
    number: str
    channel: str = "voice"  # voice | chat | text | pager | tty
    ext: str | None = None
    label: Text = field(default_factory=dict)
    hours: Hours = field(default_factory=Hours.unknown)
    after_hours: bool = False  # the number to call when the service itself is closed
    url: str | None = None  # for chat

    def dial(self) -> str:
        """The number as shown: the directory's spelling, with " ext. NNNN" (referrals/phones.py)."""
        return phones.display(self.number, self.ext)

    def tel(self) -> str | None:
        """The ``tel:`` href that dials it, extension included (referrals/phones.py); None for a chat address."""
        return _directory_tel(self.number, self.ext)

    def __hash__(self) -> int:
        # So a loader can share equal phones (``Compactor``); nothing changes a phone once it is loaded.
        return hash((self.number, self.channel, self.ext, self.after_hours))


DIRECTORY_TELS = 4096  # distinct directory numbers kept; a directory's numbers repeat across its services


@lru_cache(maxsize=DIRECTORY_TELS)
def _directory_tel(number: str, ext: str | None) -> str | None:
    # A directory's own numbers only (never a number a person typed): the urgent box and the referral list dial the
    # same few on every page, and the href is a fixed function of the number's text.
    return phones.tel_uri(number, ext)


@dataclass(slots=True)
class Address:
    line: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    confirm: bool = False  # added by us, not in the source: the deploying site must confirm


@dataclass(slots=True)
class MatchRules:
    """How an encounter's Location / serviceProvider maps onto this site or program."""

    # Sets while a loader fills them; sorted tuples, shared when equal, once the directory is loaded (every site
    # has its own name: as a frozenset of one that cost 216 bytes a site, as a tuple 48).
    identifiers: set[str] | tuple[str, ...] = field(default_factory=set)  # "system|value"
    names: set[str] | tuple[str, ...] = field(default_factory=set)  # normalised, see ``norm_name``
    organizations: set[str] | tuple[str, ...] = field(default_factory=set)  # org ids "system|value" or norm. names


@dataclass(slots=True)
class Site:
    id: str
    name: Text
    address: Address | None = None
    lat: float | None = None
    lon: float | None = None
    coords_source: str | None = None  # "source" | "zip-centroid" | "added"
    match: MatchRules = field(default_factory=MatchRules)
    hours: Hours | None = None  # overrides the service's hours at this site
    kind: str = "hospital"  # hospital | health-center: how the page names "this" place


@dataclass(slots=True)
class Region:
    """Where a local-only program takes patients from: within ``miles`` of a point (e.g. the Boston
    rape crisis centre is not for a patient seen in Springfield)."""

    lat: float
    lon: float
    miles: float
    confirm: bool = False


@dataclass(slots=True)
class Service:
    id: str
    program: str
    name: Text
    kind: str = "program"  # program | hotline | emergency
    scope: str = "local"  # local | statewide | national
    description: Text = field(default_factory=dict)
    # Lists while a loader fills them, tuples once loaded (``Compactor``: shared when equal, () when empty).
    offers: list[Text] | tuple[Text, ...] = field(default_factory=list)  # bullet points, as published
    needs: set[str] | frozenset[str] = field(default_factory=set)
    languages: set[str] | frozenset[str] = field(default_factory=set)  # spoken by staff (ISO 639-1)
    interpreters: bool = False
    language_note: Text = field(default_factory=dict)
    phones: list[Phone] | tuple[Phone, ...] = field(default_factory=list)
    hours: Hours = field(default_factory=Hours.unknown)
    sites: list[Site] | tuple[Site, ...] = field(default_factory=list)
    serves: MatchRules = field(default_factory=MatchRules)  # hospitals/networks served as a whole
    confidential_address: bool = False
    discreet_name: Text = field(default_factory=dict)  # for the handout: no DV words
    url: str | None = None
    source: dict[str, Any] = field(default_factory=dict)
    region: Region | None = None  # local-only: not listed for visits or ZIPs outside it
    closures: dict[str, str] = field(default_factory=dict)  # ISO date -> note: the program's own closed days
    observes_holidays: bool = True  # closed on US federal and state holidays (24/7 lines never close)

    @property
    def hides_address(self) -> bool:
        # DV shelters never show a street address, whatever the source file says.
        return self.confidential_address or "shelter" in self.needs

    def main_phone(self) -> Phone | None:
        for phone in self.phones:
            if phone.channel == "voice" and not phone.after_hours:
                return phone
        return self.phones[0] if self.phones else None

    def after_hours_phone(self) -> Phone | None:
        return next((p for p in self.phones if p.after_hours), None)


@dataclass(slots=True)
class Directory:
    services: list[Service]
    timezone: str = "America/New_York"
    sources: list[dict[str, Any]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)  # protective-order text, checklist, handout
    holidays: tuple[str, str | None] = ("US", "MA")  # holiday calendar (country, state) for "open now"

    def by_id(self) -> dict[str, Service]:
        return {s.id: s for s in self.services}


def _own(value: Any) -> Any:
    """A fresh copy of a string or float the parser made. The directory outlives the parsed source (JSON, CSV
    rows, YAML): one string it still points into pins a whole allocator arena of the freed source in RSS
    (bench_directory prints what a directory keeps with and without copying)."""
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "surrogatepass")
    if isinstance(value, float):
        return value * 1.0  # a new float object, same value (sign of zero and NaN kept)
    return value


def _same(value: Any) -> Any:
    return value


class Compactor:
    """Shares what repeats across a directory's services, so a large directory fits a worker (bench_directory
    prints the memory per service with and without it): equal Hours, Intervals, phones, phone lists, match rules,
    program names and short texts become one object each; codes are interned; lists and sets become tuples (a
    tuple of one is 48 bytes, a list 88, a frozenset 216; the empty tuple costs nothing). ``copy``: the source was
    parsed whole, so every string and float kept is copied (see ``_own``); a loader that decodes one service at a
    time passes False (nothing of a large freed tree to pin)."""

    def __init__(self, copy: bool = True) -> None:
        self.own = _own if copy else _same
        self.copy = copy
        self.hours: dict[tuple[Any, ...], Hours] = {}
        self.intervals: dict[Interval, Interval] = {}
        self.shared: dict[Any, Any] = {}  # strings, sorted tuples of codes, tuples of phones: each its own key
        self.texts: dict[tuple[tuple[str, str], ...], Text] = {}
        self.phones: dict[Phone, Phone] = {}
        self.rules: dict[tuple[tuple[str, ...], ...], MatchRules] = {}

    def text(self, value: Text) -> Text:
        # Equal texts share one dict (nothing writes to a loaded directory's texts).
        key = tuple(value.items()) if value else ()
        shared = self.texts.get(key)
        if shared is None:
            shared = self.texts[key] = {sys.intern(k): self.own(v) for k, v in key}
        return shared

    def unique_text(self, value: Text) -> Text:
        # A name: seldom shared, so not worth a lookup; copied only when the source was parsed whole.
        return {sys.intern(k): _own(v) for k, v in value.items()} if self.copy else value

    def share(self, value: Any) -> Any:
        """One object for equal strings or tuples."""
        return self.shared.setdefault(value, value)

    def codes(self, value: set[str] | frozenset[str] | tuple[str, ...]) -> tuple[str, ...]:
        # Shared, not interned: most are one site's own name, and each interned string stays in the
        # interpreter's table (~40 bytes a site).
        if not value:
            return ()
        return self.share(tuple(sorted(self.share(self.own(x)) for x in value)))

    def strset(self, value: set[str] | frozenset[str]) -> frozenset[str]:
        # Needs and languages: few distinct sets, tested with ``in`` for every ranked service.
        frozen = frozenset(sys.intern(self.own(x)) for x in value)
        return self.share(frozen)

    def hour(self, value: Hours) -> Hours:
        weekly = [self.intervals.setdefault(iv, Interval(tuple(sys.intern(d) for d in iv.days), iv.opens, iv.closes))
                  for iv in value.weekly]
        key = (value.always, value.known, tuple(weekly), tuple(value.note.items()))
        shared = self.hours.get(key)
        if shared is None:
            value.weekly = weekly
            value.note = self.text(value.note)
            shared = self.hours[key] = value
        return shared

    def match(self, value: MatchRules) -> MatchRules:
        key = (self.codes(value.identifiers), self.codes(value.names), self.codes(value.organizations))
        shared = self.rules.get(key)
        if shared is None:
            value.identifiers, value.names, value.organizations = key
            shared = self.rules[key] = value
        return shared

    def phone(self, p: Phone) -> Phone:
        own = self.own
        p.number, p.ext, p.url = own(p.number), own(p.ext), own(p.url)
        p.channel = sys.intern(p.channel)
        p.label = self.text(p.label)
        p.hours = self.hour(p.hours)
        return self.phones.setdefault(p, p)

    def address(self, value: Address) -> Address:
        own = self.own
        for attr in ("city", "state", "postal_code"):
            v = getattr(value, attr)
            if v is not None:
                setattr(value, attr, sys.intern(own(v)))
        value.line = own(value.line)
        return value

    def service(self, s: Service) -> None:
        own = self.own
        s.id, s.program, s.url = own(s.id), self.share(own(s.program)), own(s.url)
        s.name = self.unique_text(s.name)
        s.source = self.text(s.source) if all(isinstance(v, str) for v in s.source.values()) \
            else self.unique_text(s.source)
        s.needs = self.strset(s.needs)
        s.languages = self.strset(s.languages)
        s.kind, s.scope = sys.intern(s.kind), sys.intern(s.scope)
        s.hours = self.hour(s.hours)
        s.serves = self.match(s.serves)
        s.offers = tuple(self.text(o) for o in s.offers)
        for attr in ("description", "language_note", "discreet_name"):
            setattr(s, attr, self.text(getattr(s, attr)))
        if not s.closures:
            s.closures = self.text(s.closures)
        s.phones = self.share(tuple(self.phone(p) for p in s.phones))
        for site in s.sites:
            site.id, site.lat, site.lon = own(site.id), own(site.lat), own(site.lon)
            site.name = self.unique_text(site.name)
            site.kind = sys.intern(site.kind)
            if site.coords_source is not None:
                site.coords_source = sys.intern(site.coords_source)
            if site.hours is not None:
                site.hours = self.hour(site.hours)
            if site.address is not None:
                site.address = self.address(site.address)
            site.match = self.match(site.match)
        s.sites = tuple(s.sites)


def compact_services(services: list[Service]) -> None:
    """Make a freshly loaded directory compact, in place; called once by every loader (``finish``).
    Afterwards the directory is read-only in practice: sets are frozensets and equal objects are shared."""
    compactor = Compactor()
    for s in services:
        compactor.service(s)


_WORD = re.compile(r"[^\W_]+")  # a run of characters for which str.isalnum() is true (what \w is, less "_")


def norm_name(name: str) -> str:
    """Compare names loosely: case, punctuation and apostrophes do not matter (the words, lower-case, joined
    by single spaces)."""
    return " ".join(_WORD.findall(name.lower()))


def is_reference(value: str) -> bool:
    """'Location/loc-1' or 'Organization/org-1': a FHIR literal reference used as a match key."""
    kind, _, rest = value.partition("/")
    return kind in ("Location", "Organization") and bool(rest) and "/" not in rest
