"""Rank the directory for one visit: which program serves this hospital, what is open now, who speaks the
patient's language, what meets the stated needs, and how far it is from a ZIP the patient chose to give (never
the address on file). Each result says why it is listed; ``RankingWeights`` holds what each reason is worth.

A query (``RankingQuery``) reads a ``DirectoryIndex`` built once per directory (``referrals.index``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from babel import UnknownLocaleError
from babel.dates import get_day_names

from referrals.closures import closure, holiday_name
from referrals.geography import centroid, miles, normalise_zip
from referrals.hours import fmt_minutes, minute_of_week, week_ranges
from referrals.index import MAX_MILES, NEED_BIT, DirectoryIndex, Entry
from referrals.model import DAYS, Hours, Phone, Service, Site, text_in
from referrals.visit import Visit


@dataclass(frozen=True)
class RankingWeights:
    """Points a listed program earns for what it offers this visit; the list runs from most points to fewest.
    The visit's own program is listed first whatever its points; equal points go to the nearer, then by id."""

    default_program: float = 30  # the visit's site is unknown: the hospital system's own programs lead
    per_need_met: float = 20  # each stated need it meets: what the patient asked for comes before convenience
    speaks_language: float = 15  # staff speak the patient's language: no interpreter between patient and advocate
    open_now: float = 8  # open now, or 24/7: a person answers the main line while the patient is here
    interpreters: float = 5  # interpreters available: reachable, less directly than staff who speak the language
    after_hours_pager: float = 4  # closed, but an advocate's pager answers now
    reachable_anywhere: float = 2  # a hotline or statewide service: no travel needed
    per_mile: float = 0.5  # taken off per mile from the safe ZIP or the visit's site (counted up to MAX_MILES)


WEIGHTS = RankingWeights()

# A stated need is met by any of these offers.
# Court accompaniment (HAVEN's "supportive accompaniment to court") answers a legal need but is not legal help.
NEED_SYNONYMS = {"legal": ("legal", "court-accompaniment"), "shelter": ("shelter",),
                 "counselling": ("counselling", "support-groups"), "sexual-assault": ("sexual-assault",),
                 "housing": ("housing", "shelter")}
# Local programs considered by distance: three per result asked for, at least 30, so the needs filter and the
# regional limits still leave a full list.
NEARBY_PER_RESULT = 3
NEARBY_AT_LEAST = 30

LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "pt": "Portuguese", "ht": "Haitian Creole", "zh": "Chinese",
                  "vi": "Vietnamese", "ar": "Arabic", "ru": "Russian", "fr": "French"}
NEED_LABELS = {"legal": "legal help and protective orders (209A)", "shelter": "shelter",
               "counselling": "counselling", "sexual-assault": "sexual assault", "housing": "housing",
               "safety-planning": "safety planning", "support-groups": "support groups",
               "accompaniment": "accompaniment", "crisis": "crisis support", "advocacy": "advocacy",
               "court-accompaniment": "court accompaniment"}

# English text of each reason; the referral page translates the same templates with gettext.
REASON_TEXT = {
    "on_site": "On site at this hospital",
    "on_site_health_center": "On site at this health center",
    "serves_site": "Serves this hospital",
    "default_program": "Program of this hospital system (the visit's site is not known)",
    "holiday": "Closed today ({name})",
    "always": "24/7",
    "open_now": "Open now",
    "after_hours": "After hours: call the pager {phone}",
    "closed": "Closed now",
    "speaks": "Speaks {language}",
    "interpreters": "Interpreters available",
    "needs": "Helps with {needs}",
    "distance_zip": "{miles} miles from {zip}",
    "distance_site": "{miles} miles from this hospital",
    "distance_site_health_center": "{miles} miles from this health center",
}


@dataclass(frozen=True)
class Reason:
    code: str
    params: dict[str, str] = field(default_factory=dict)

    def text(self) -> str:
        return REASON_TEXT[self.code].format(**self.params)


@dataclass
class Result:
    service: Service
    site: Site | None
    on_site: bool
    open_now: bool | None
    distance: float | None
    call: Phone | None  # the number to call now (the pager when the program is closed)
    reasons: list[Reason]
    score: float

    @property
    def why(self) -> list[str]:
        return [r.text() for r in self.reasons]

    def address(self) -> str | None:
        """The street address to show, or None: DV shelters never show one."""
        if self.service.hides_address or self.site is None or self.site.address is None:
            return None
        a = self.site.address
        parts = [p for p in (a.line, a.city, " ".join(x for x in (a.state, a.postal_code) if x)) if p]
        return ", ".join(parts) or None

    def as_data(self) -> dict[str, Any]:
        """The shape stored in launch.data["referral"]["results"] (no PHI: directory facts only)."""
        return {"service_id": self.service.id, "program": self.service.program,
                "name": text_in(self.service.name, "en"),
                "phone": self.call.dial() if self.call else None,
                "site_id": self.site.id if self.site else None,
                "why": self.why}


@dataclass
class Ranking:
    results: list[Result]
    site: Site | None  # the directory site matched to the encounter
    site_service: Service | None
    origin: str  # "zip" | "site" | "none"
    zip_code: str | None
    zip_unknown: bool  # a ZIP was given but is not in the offline table
    emergency: list[Service]
    placed: bool = True  # the encounter names a location or organization
    holiday: str | None = None  # today's public holiday, if any
    call_now: list[CallNow] = field(default_factory=list)  # the one or two numbers to call at this hour


@dataclass
class CallNow:
    """A number to call now: the site's program (main line when open, pager otherwise), then a 24/7 line."""

    service: Service
    phone: Phone
    state: str  # "open" | "after_hours" | "always"
    closure: str | None = None  # why the program is closed all day (holiday or its own closure)



@dataclass(frozen=True)
class RankingQuery:
    """One visit's question to the directory."""

    visit: Visit = field(default_factory=Visit)  # where the visit happens, as the launch names it
    safe_zip: str | None = None  # a ZIP the patient chose to give; never the address on file
    language: str = "en"  # the patient's language (only the primary subtag counts: "es-MX" is "es")
    needs: tuple[str, ...] = ()  # stated needs (NEEDS); others are ignored
    now: datetime | None = None  # default: the current time; a naive time is UTC
    limit: int = 10
    site_map: Mapping[str, str] | None = None  # the deployment's EHR key -> directory site id, before the rules
    default_programs: tuple[str, ...] = ()  # the deployment's programs for a visit whose site is not known

    @classmethod
    def for_launch(cls, context: dict[str, Any] | None = None, *, safe_zip: str | None = None,
                   needs: Sequence[str] = (), language: str = "en", now: datetime | None = None, limit: int = 10,
                   site_map: Mapping[str, str] | None = None,
                   default_programs: Sequence[str] = ()) -> RankingQuery:
        """The query for a launch context (its encounter's Locations and serviceProvider)."""
        return cls(visit=Visit.from_context(context), safe_zip=safe_zip, language=language, needs=tuple(needs),
                   now=now, limit=limit, site_map=site_map, default_programs=tuple(default_programs))


@dataclass(frozen=True, slots=True)
class _Clock:
    """The query's time as the directory reads it."""

    minute: int  # of the week, in the directory's time zone
    today: date
    calendar: tuple[str, str | None]
    holiday: str | None

    @classmethod
    def at(cls, now: datetime | None, index: DirectoryIndex) -> _Clock:
        now = now or datetime.now(UTC)
        if now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        today = now.astimezone(ZoneInfo(index.timezone)).date()
        calendar = index.directory.holidays
        return cls(minute_of_week(now, index.timezone), today, calendar, holiday_name(today, calendar))


@dataclass(frozen=True, slots=True)
class _Setting:
    """What every candidate is judged against: the visit's site, the origin of distances, language, needs."""

    site: Site | None  # the directory site matched to the visit
    site_service: Service | None
    on_site: bool
    site_entry: int | None
    defaults: tuple[int, ...]  # the deployment's default programs, when the visit's site is not known
    placed: bool
    origin: tuple[float, float] | None
    origin_kind: str  # "zip" | "site" | "none"
    zip_code: str | None
    zip_unknown: bool
    language: str
    wanted: list[str]
    mask: int  # bits of every offer that meets a stated need
    clock: _Clock


def _needs_mask(needs: Sequence[str]) -> tuple[list[str], int]:
    wanted = [n for n in dict.fromkeys(needs) if n in NEED_BIT]
    mask = 0
    for n in wanted:
        for offer in NEED_SYNONYMS.get(n, (n,)):
            mask |= NEED_BIT[offer]
    return wanted, mask


def _origin(index: DirectoryIndex, visit: Visit, site: Site | None,
            zip_code: str | None) -> tuple[tuple[float, float] | None, str]:
    """Where distances are measured from: the safe ZIP, else the visit's site, else nowhere."""
    origin = centroid(zip_code) if zip_code else None
    if origin is not None:
        return origin, "zip"
    origin = index.site_origin(visit, site)
    return origin, "site" if origin is not None else "none"


def _setting(index: DirectoryIndex, query: RankingQuery) -> _Setting:
    site, site_service, on_site = index.match_site(query.visit, query.site_map)
    placed = query.visit.placed
    defaults: tuple[int, ...] = ()
    if site_service is None and not placed:
        defaults = tuple(index.by_id[sid] for sid in query.default_programs if sid in index.by_id)
    zip_code = normalise_zip(query.safe_zip)
    zip_unknown = bool(query.safe_zip) and (zip_code is None or centroid(zip_code) is None)
    origin, origin_kind = _origin(index, query.visit, site, zip_code)
    wanted, mask = _needs_mask(query.needs)
    return _Setting(site=site, site_service=site_service, on_site=on_site,
                    site_entry=index.by_id[site_service.id] if site_service else None, defaults=defaults,
                    placed=placed, origin=origin, origin_kind=origin_kind, zip_code=zip_code,
                    zip_unknown=zip_unknown, language=(query.language or "en").split("-")[0].lower(),
                    wanted=wanted, mask=mask, clock=_Clock.at(query.now, index))


def _candidates(index: DirectoryIndex, setting: _Setting,
                limit: int) -> dict[int, tuple[float | None, int | None]]:
    """Entries worth scoring (entry -> (miles, site index) when found by distance): the visit's program, the
    default programs, the hotlines for each stated need, and the nearest local programs."""
    candidates: dict[int, tuple[float | None, int | None]] = {}
    if setting.site_entry is not None:
        candidates[setting.site_entry] = (None, None)
    for i in setting.defaults:
        candidates.setdefault(i, (None, None))
    for need in setting.wanted or [None]:
        for i in (index.wide_by_need.get(need, []) if need else index.wide_all):
            candidates.setdefault(i, (None, None))
    if setting.origin is not None:
        found = index.nearby(setting.origin, setting.mask, max(limit * NEARBY_PER_RESULT, NEARBY_AT_LEAST))
        for i, (d, si) in found.items():
            prev = candidates.get(i)
            if prev is None or prev[0] is None:
                candidates[i] = (d, si)
    return candidates


def _outside_region(s: Service, setting: _Setting) -> bool:
    """A local-only program, not for this visit or ZIP (Boston's rape crisis centre for a visit in Springfield).
    A visit at a known site that cannot be placed gets no regional program at all."""
    if s.region is None:
        return False
    if setting.origin is None:
        return setting.placed
    return miles(setting.origin, (s.region.lat, s.region.lon)) > s.region.miles


@dataclass(slots=True)
class _Card:
    """A candidate's reasons and points as they are added up."""

    reasons: list[Reason] = field(default_factory=list)
    score: float = 0.0

    def add(self, reason: Reason, points: float = 0) -> None:
        self.reasons.append(reason)
        if points:
            self.score += points


def _place_reason(card: _Card, setting: _Setting, i: int, weights: RankingWeights) -> None:
    if i == setting.site_entry:
        if not setting.on_site:
            card.add(Reason("serves_site"))
        elif setting.site is not None and setting.site.kind == "health-center":
            card.add(Reason("on_site_health_center"))
        else:
            card.add(Reason("on_site"))
    elif i in setting.defaults:
        card.add(Reason("default_program"), weights.default_program)


def open_state(entry: Entry, hours: Hours | None, mow: int) -> bool | None:
    """Is it open at minute ``mow`` of the week: by the site's own hours where it has them, else the service's.
    None when the source does not say."""
    if hours is not None:
        if hours.always:
            return True
        if not hours.known:
            return None
        return any(a <= mow < b for a, b in week_ranges(hours))
    if entry.always:
        return True
    if not entry.known or entry.ranges is None:
        return None
    return any(a <= mow < b for a, b in entry.ranges)


def _hours_reasons(card: _Card, entry: Entry, shown_site: Site | None, clock: _Clock,
                   weights: RankingWeights) -> tuple[bool | None, Phone | None]:
    """(open now, the number to call now): the main line when open or unknown, the pager when closed."""
    s = entry.service
    is_open = open_state(entry, shown_site.hours if shown_site else None, clock.minute)
    closed_why = closure(s, clock.today, clock.calendar) if is_open is True and not entry.always else None
    if closed_why:
        is_open = False
        card.add(Reason("holiday", {"name": closed_why}))
    if is_open is True:
        card.add(Reason("always" if entry.always else "open_now"), weights.open_now)
        return is_open, s.main_phone()
    if is_open is None:
        return is_open, s.main_phone()
    pager = s.after_hours_phone()
    if pager is None:
        card.add(Reason("closed"))
        return is_open, s.main_phone()
    card.add(Reason("after_hours", {"phone": pager.dial()}), weights.after_hours_pager)
    return is_open, pager


def _language_reason(card: _Card, s: Service, lang: str, weights: RankingWeights) -> None:
    if lang == "en":
        return
    if lang in s.languages:
        card.add(Reason("speaks", {"language": LANGUAGE_NAMES.get(lang, lang)}), weights.speaks_language)
    elif s.interpreters:
        card.add(Reason("interpreters"), weights.interpreters)


def _needs_reason(card: _Card, entry: Entry, wanted: list[str], weights: RankingWeights) -> None:
    # Name what the program offers for each stated need (HAVEN: "court accompaniment", not "legal help").
    met = []
    for n in wanted:
        offered = [x for x in NEED_SYNONYMS.get(n, (n,)) if NEED_BIT[x] & entry.mask]
        if offered:
            met.append(offered[0])
    if met:
        card.add(Reason("needs", {"needs": ", ".join(NEED_LABELS[n] for n in dict.fromkeys(met))}),
                 weights.per_need_met * len(met))


def _distance_reason(card: _Card, dist: float | None, is_site: bool, setting: _Setting,
                     weights: RankingWeights) -> None:
    if dist is None:
        return
    shown = f"{dist:.1f}"
    if setting.origin_kind == "zip":
        card.add(Reason("distance_zip", {"miles": shown, "zip": setting.zip_code or ""}))
    elif setting.origin_kind == "site" and not is_site:
        hc = setting.site is not None and setting.site.kind == "health-center"
        card.add(Reason("distance_site_health_center" if hc else "distance_site", {"miles": shown}))
    card.score -= min(dist, MAX_MILES) * weights.per_mile


def _result(index: DirectoryIndex, setting: _Setting, weights: RankingWeights, i: int, dist: float | None,
            si: int | None) -> Result | None:
    """One candidate scored with its reasons, or None when it is not for this visit."""
    e = index.entries[i]
    s = e.service
    is_site = i == setting.site_entry
    if setting.mask and not is_site and not e.mask & setting.mask:
        return None  # meets none of the stated needs
    if not is_site and i not in setting.defaults and _outside_region(s, setting):
        return None
    if is_site and setting.site is not None:
        shown_site = setting.site
    else:
        shown_site = s.sites[si] if si is not None else None
    if is_site and setting.origin_kind == "zip":
        # From the ZIP's centroid to the site shown (not to whichever of its sites is nearest).
        dist = _nearest_site_miles(s, setting.origin, setting.site)
    card = _Card()
    _place_reason(card, setting, i, weights)
    is_open, call = _hours_reasons(card, e, shown_site, setting.clock, weights)
    _language_reason(card, s, setting.language, weights)
    _needs_reason(card, e, setting.wanted, weights)
    _distance_reason(card, dist, is_site, setting, weights)
    if e.wide:
        card.score += weights.reachable_anywhere
    return Result(s, shown_site, is_site and setting.on_site, is_open, dist, call, card.reasons, card.score)


def rank(index: DirectoryIndex, query: RankingQuery, weights: RankingWeights = WEIGHTS) -> Ranking:
    """Ranked services for one patient visit; each result says why it is listed.

    The deployment's ``default_programs`` are offered when the launch does not say where the visit is (no
    encounter, or one without location or organization), so the clinician still sees the hospital system's own
    programs; a visit at a known place outside them (another hospital) gets none."""
    setting = _setting(index, query)
    results = [r for i, (dist, si) in _candidates(index, setting, query.limit).items()
               if (r := _result(index, setting, weights, i, dist, si)) is not None]
    results.sort(key=lambda r: (0 if r.service is setting.site_service else 1, -r.score, r.distance or 0.0,
                                r.service.id))
    results = results[:query.limit]
    defaults = {index.entries[i].service.id for i in setting.defaults}
    return Ranking(results=results, site=setting.site, site_service=setting.site_service,
                   origin=setting.origin_kind, zip_code=setting.zip_code if not setting.zip_unknown else None,
                   zip_unknown=setting.zip_unknown, emergency=list(index.emergency), placed=setting.placed,
                   holiday=setting.clock.holiday,
                   call_now=call_now(results, setting.site_service, defaults, setting.clock.today,
                                     setting.clock.calendar))


def call_now(results: list[Result], site_service: Service | None, defaults: set[str], today: date,
             calendar: tuple[str, str | None]) -> list[CallNow]:
    """Who to call at this hour: the visit's program (or, with no known site, the deployment's default
    programs), each on its main line when open and its pager otherwise; then the first 24/7 line."""
    out: list[CallNow] = []
    for r in results:
        s = r.service
        if not (s is site_service or s.id in defaults) or r.call is None:
            continue
        state = "after_hours" if r.open_now is False and r.call.after_hours else "open"
        out.append(CallNow(s, r.call, state, closure(s, today, calendar)))
    hotline = next((r for r in results if r.open_now is True and r.service.hours.always and r.call is not None
                    and r.service.kind == "hotline" and r.service.scope != "local"), None)
    if hotline is not None:
        out.append(CallNow(hotline.service, hotline.call, "always"))
    return out


def _nearest_site_miles(s: Service, origin: tuple[float, float], site: Site | None) -> float | None:
    points = [(t.lat, t.lon) for t in ([site] if site else s.sites) if t.lat is not None and t.lon is not None]
    return min((miles(origin, p) for p in points), default=None)


# Weekday abbreviations as our texts write them; any other language takes CLDR's (Babel), Monday first.
DAY_NAMES = {"en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
             "es": ("lun", "mar", "mié", "jue", "vie", "sáb", "dom"),
             "pt": ("seg", "ter", "qua", "qui", "sex", "sáb", "dom"),
             # CLDR has no Haitian Creole day names (Babel gives English): the Kreyòl words, whole.
             "ht": ("lendi", "madi", "mèkredi", "jedi", "vandredi", "samdi", "dimanch")}


@lru_cache(maxsize=32)
def day_names(lang: str) -> tuple[str, ...]:
    try:
        found = get_day_names("abbreviated", locale=lang.replace("-", "_"))
    except (UnknownLocaleError, ValueError):
        return DAY_NAMES["en"]
    return tuple(found[i] for i in range(7))


def describe_hours(hours: Hours, lang: str = "en") -> str:
    """'Mon-Fri 8:30am-5:30pm' (used by the page and the handout)."""
    if hours.always:
        return "24/7"
    if not hours.known or not hours.weekly:
        return ""
    names = DAY_NAMES.get(lang) or day_names(lang)
    parts = []
    for iv in hours.weekly:
        idx = [DAYS.index(d) for d in iv.days]
        if len(idx) > 2 and idx == list(range(idx[0], idx[-1] + 1)):
            days = f"{names[idx[0]]}-{names[idx[-1]]}"
        else:
            days = ", ".join(names[i] for i in idx)
        parts.append(f"{days} {fmt_minutes(iv.opens, lang)}-{fmt_minutes(iv.closes, lang)}")
    return "; ".join(parts)
