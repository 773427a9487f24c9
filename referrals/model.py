"""The in-memory directory model every loader produces and the ranking reads.

One ``Service`` is one program or hotline (what a patient calls); its ``sites`` are the
places it works from and the hospitals/clinics it serves. Texts a patient sees are
bilingual (``Text``: language code -> string) so the page and the handout need no
second lookup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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


def text_in(text: Text | None, lang: str) -> str:
    """The text in ``lang``, falling back to English, then to any language given."""
    if not text:
        return ""
    return text.get(lang) or text.get("en") or next(iter(text.values()))


@dataclass(frozen=True)
class Interval:
    """Open from ``opens`` to ``closes`` (minutes after midnight, local time) on ``days``.
    ``closes`` <= ``opens`` means the interval runs past midnight (e.g. chat 8am-3am)."""

    days: tuple[str, ...]
    opens: int
    closes: int


@dataclass
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


@dataclass
class Phone:
    number: str
    channel: str = "voice"  # voice | chat | text | pager | tty
    ext: str | None = None
    label: Text = field(default_factory=dict)
    hours: Hours = field(default_factory=Hours.unknown)
    after_hours: bool = False  # the number to call when the service itself is closed
    url: str | None = None  # for chat

    def dial(self) -> str:
        return f"{self.number} ext. {self.ext}" if self.ext else self.number


@dataclass
class Address:
    line: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    confirm: bool = False  # added by us, not in the source: the deploying site must confirm


@dataclass
class MatchRules:
    """How an encounter's Location / serviceProvider maps onto this site or program."""

    identifiers: set[str] = field(default_factory=set)  # "system|value"
    names: set[str] = field(default_factory=set)  # normalised, see ``norm_name``
    organizations: set[str] = field(default_factory=set)  # org identifiers "system|value" or normalised names


@dataclass
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


@dataclass
class Region:
    """Where a local-only program takes patients from: within ``miles`` of a point (e.g. the Boston
    rape crisis centre is not for a patient seen in Springfield)."""

    lat: float
    lon: float
    miles: float
    confirm: bool = False


@dataclass
class Service:
    id: str
    program: str
    name: Text
    kind: str = "program"  # program | hotline | emergency
    scope: str = "local"  # local | statewide | national
    description: Text = field(default_factory=dict)
    offers: list[Text] = field(default_factory=list)  # bullet points, as published
    needs: set[str] = field(default_factory=set)
    languages: set[str] = field(default_factory=set)  # spoken by staff (ISO 639-1)
    interpreters: bool = False
    language_note: Text = field(default_factory=dict)
    phones: list[Phone] = field(default_factory=list)
    hours: Hours = field(default_factory=Hours.unknown)
    sites: list[Site] = field(default_factory=list)
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


@dataclass
class Directory:
    services: list[Service]
    timezone: str = "America/New_York"
    sources: list[dict[str, Any]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)  # protective-order text, checklist, handout
    holidays: tuple[str, str | None] = ("US", "MA")  # holiday calendar (country, state) for "open now"

    def by_id(self) -> dict[str, Service]:
        return {s.id: s for s in self.services}


def norm_name(name: str) -> str:
    """Compare names loosely: case, punctuation and apostrophes do not matter."""
    out = []
    for ch in name.lower().replace("’", "'"):
        if ch.isalnum():
            out.append(ch)
        elif out and out[-1] != " ":
            out.append(" ")
    return "".join(out).strip()


def is_reference(value: str) -> bool:
    """'Location/loc-1' or 'Organization/org-1': a FHIR literal reference used as a match key."""
    kind, _, rest = value.partition("/")
    return kind in ("Location", "Organization") and bool(rest) and "/" not in rest
