"""A frozen copy of referrals/ranking.py as it was before its ranking was split into named parts, kept only
while that refactoring is under way: the regression test compares the two on generated queries.

Rank the directory for one launch: which program serves this hospital, what is open now,
who speaks the patient's language, what meets the stated needs, and how far it is from a ZIP
the patient chose to give (never the address on file).

Everything a query needs is precomputed once per directory (``DirectoryIndex``): match keys,
need bit masks, minute-of-week opening ranges and a lat/lon grid, so a query touches only a
few hundred entries even in a 50,000-service directory.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from referrals.closures import closure, holiday_name
from referrals.geography import centroid, miles, normalise_zip
from referrals.hours import WEEK, fmt_minutes, minute_of_week, week_ranges
from referrals.model import DAYS, NEEDS, Directory, Hours, Phone, Service, Site, norm_name, text_in

NEED_BIT = {need: 1 << i for i, need in enumerate(NEEDS)}
# A stated need is met by any of these offers.
# Court accompaniment (HAVEN's "supportive accompaniment to court") answers a legal need but is not legal help.
NEED_SYNONYMS = {"legal": ("legal", "court-accompaniment"), "shelter": ("shelter",),
                 "counselling": ("counselling", "support-groups"), "sexual-assault": ("sexual-assault",),
                 "housing": ("housing", "shelter")}
CELL = 0.02  # grid cell, degrees (~1.4 x 1 miles in Massachusetts): dense Boston cells stay small
MILES_PER_DEG = 69.05
MAX_MILES = 50.0  # local programs further than this from the origin are not listed
WIDE_PER_NEED = 25  # hotlines considered per stated need
# At or below this many located sites (decided when the index is built) a full scan beats walking grid cells:
# `make bench` (bench_nearby) measured the crossover between 500 (brute 0.10 ms, grid 0.13 ms) and 1,000 sites
# (0.19 vs 0.10 ms) on this machine.
BRUTE_FORCE_MAX_SITES = 700

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


@dataclass(slots=True)
class _Entry:
    service: Service
    mask: int
    ranges: list[tuple[int, int]] | None  # None: 24/7; [] with known False: unknown
    always: bool
    known: bool
    wide: bool  # hotline / statewide / national: listed without a nearby site


class DirectoryIndex:
    """A directory plus everything a query needs, built once at load."""

    def __init__(self, directory: Directory):
        self._build(directory)

    def _build(self, directory: Directory) -> None:
        self.directory = directory
        self.timezone = directory.timezone
        self.entries: list[_Entry] = []
        self.emergency: list[Service] = []
        self.by_id: dict[str, int] = {}
        # Match keys -> the first service (in directory order) with that key: a query only ever takes the first.
        # Names ("name:" keys in a query, see ``_keys``) have their own tables keyed by the normalised name
        # itself, the string the match rules already hold.
        self.site_keys: dict[str, tuple[int, Site]] = {}
        self.site_names: dict[str, tuple[int, Site]] = {}
        self.serve_keys: dict[str, int] = {}
        self.serve_names: dict[str, int] = {}
        # Located sites as flat runs of (entry, site index, lat, lon): four references a site instead of one
        # to a 72-byte tuple. ``points`` (every located site in directory order, for the brute-force scan) is
        # kept only where that scan is used (see ``nearby``).
        self.grid: dict[tuple[int, int], list[Any]] = {}
        self.points: list[Any] | None = None
        self.located_sites = 0
        points: list[Any] = []
        wide_all: list[int] = []
        shared_ranges: dict[int, list[tuple[int, int]]] = {}  # loaders share equal Hours: one range list each
        for s in directory.services:
            if s.kind == "emergency":
                self.emergency.append(s)
                continue
            i = len(self.entries)
            self.by_id[s.id] = i
            mask = 0
            for n in s.needs:
                mask |= NEED_BIT.get(n, 0)
            # Listed without a nearby site: hotlines, statewide/national services, and any service whose
            # sites have no coordinates (it could never be found by distance).
            wide = s.kind == "hotline" or s.scope != "local" or not any(t.lat is not None for t in s.sites)
            ranges = None
            if not s.hours.always:
                ranges = shared_ranges.get(id(s.hours))
                if ranges is None:
                    ranges = shared_ranges[id(s.hours)] = week_ranges(s.hours)
            self.entries.append(_Entry(s, mask, ranges, s.hours.always, s.hours.known, wide))
            if wide:
                wide_all.append(i)
            for k, site in enumerate(s.sites):
                for key in site.match.identifiers:
                    if key.startswith("name:"):
                        self.site_names.setdefault(key[5:], (i, site))
                    elif key not in self.site_keys:
                        self.site_keys[key] = (i, site)
                for name in site.match.names:
                    if name not in self.site_names:
                        self.site_names[name] = (i, site)
                if site.lat is not None and site.lon is not None:
                    cell = (math.floor(site.lat / CELL), math.floor(site.lon / CELL))
                    self.grid.setdefault(cell, []).extend((i, k, site.lat, site.lon))
                    points.extend((i, k, site.lat, site.lon))
                    self.located_sites += 1
            for key in (*s.serves.identifiers, *s.serves.organizations):
                if "|" not in key and "/" not in key:  # an organization's name
                    self.serve_names.setdefault(key, i)
                elif key.startswith("name:"):
                    self.serve_names.setdefault(key[5:], i)
                else:
                    self.serve_keys.setdefault(key, i)
            for name in s.serves.names:
                self.serve_names.setdefault(name, i)
        if self.located_sites <= BRUTE_FORCE_MAX_SITES:  # (decided here: the grid answers larger directories)
            self.points = points
        # Hotlines: 24/7 first, then by id, so a query takes the first few per need in O(1).
        wide_all.sort(key=lambda i: (not self.entries[i].always, self.entries[i].service.id))
        self.wide_all = wide_all[:WIDE_PER_NEED * 2]
        self.wide_by_need: dict[str, list[int]] = {}
        for need, bit in NEED_BIT.items():
            self.wide_by_need[need] = [i for i in wide_all if self.entries[i].mask & bit][:WIDE_PER_NEED]

    # -- encounter -> site -------------------------------------------------------------------------
    def match_site(self, context: dict[str, Any] | None,
                   site_map: dict[str, str] | None = None) -> tuple[Site | None, Service | None, bool]:
        """(site, service, on_site) for the encounter: Location first, then serviceProvider."""
        encounter = (context or {}).get("encounter") or {}
        loc_keys: list[str] = []
        for loc in encounter.get("locations") or []:
            loc_keys.extend(_keys(loc, "Location"))
        org = encounter.get("service_provider") or {}
        org_keys = _keys(org, "Organization") if org else []
        if site_map:
            for key in loc_keys + org_keys:
                mapped = site_map.get(key)
                if mapped:
                    for entry in self.entries:
                        for site in entry.service.sites:
                            if site.id == mapped:
                                return site, entry.service, True
        for keys in (loc_keys, org_keys):
            for key in keys:
                hit = self.site_names.get(key[5:]) if key.startswith("name:") else self.site_keys.get(key)
                if hit:
                    i, site = hit
                    return site, self.entries[i].service, True
            for key in keys:
                served = self.serve_names.get(key[5:]) if key.startswith("name:") else self.serve_keys.get(key)
                if served is not None:
                    return None, self.entries[served].service, False
        return None, None, False

    def site_origin(self, context: dict[str, Any] | None, site: Site | None) -> tuple[float, float] | None:
        """Where the encounter happened (hospital ZIP centroid): a safe origin, not the patient's home."""
        if site is not None and site.lat is not None and site.lon is not None:
            return site.lat, site.lon
        encounter = (context or {}).get("encounter") or {}
        for loc in encounter.get("locations") or []:
            point = centroid(loc.get("postalCode"))
            if point:
                return point
        return None

    # -- nearby ---------------------------------------------------------------------------------------
    def nearby(self, origin: tuple[float, float], mask: int, k: int,
               max_miles: float = MAX_MILES) -> dict[int, tuple[float, int]]:
        """Up to k local services nearest ``origin`` (entry -> (miles, site index)) meeting any need in
        ``mask`` (all when 0), searching the grid ring by ring and stopping once no closer one can exist."""
        lat0, lon0 = origin
        cos0 = math.cos(math.radians(lat0))
        best: dict[int, tuple[float, int]] = {}
        if self.points is not None:
            # A small directory: scanning every site beats walking empty grid cells out to max_miles.
            self._scan(self.points, lat0, lon0, cos0, mask, max_miles, best)
            return _k_nearest(best, k)
        ci, cj = math.floor(lat0 / CELL), math.floor(lon0 / CELL)
        cell_miles = CELL * MILES_PER_DEG * cos0  # the narrower side of a cell
        max_ring = int(max_miles / cell_miles) + 2
        for r in range(max_ring + 1):
            if len(best) >= k:
                kth = heapq.nsmallest(k, (d for d, _ in best.values()))[-1]
                if (r - 1) * cell_miles > kth:
                    break
            for di in range(-r, r + 1):
                edge = abs(di) == r
                for dj in (range(-r, r + 1) if edge else (-r, r)):
                    rows = self.grid.get((ci + di, cj + dj))
                    if rows:
                        self._scan(rows, lat0, lon0, cos0, mask, max_miles, best)
        return _k_nearest(best, k)

    def _scan(self, rows: list[Any], lat0: float, lon0: float, cos0: float, mask: int,
              max_miles: float, best: dict[int, tuple[float, int]]) -> None:
        entries = self.entries
        run = iter(rows)
        for i, si, lat, lon in zip(run, run, run, run, strict=True):
            e = entries[i]
            if e.wide or (mask and not e.mask & mask):
                continue
            # Equirectangular distance: accurate to well under 1% at these ranges.
            dy = (lat - lat0) * MILES_PER_DEG
            dx = (lon - lon0) * MILES_PER_DEG * cos0
            d = math.sqrt(dx * dx + dy * dy)
            if d <= max_miles and (i not in best or d < best[i][0]):
                best[i] = (d, si)


def _k_nearest(best: dict[int, tuple[float, int]], k: int) -> dict[int, tuple[float, int]]:
    if len(best) > k:
        return dict(heapq.nsmallest(k, best.items(), key=lambda kv: kv[1][0]))
    return best


def _keys(ref: dict[str, Any], kind: str) -> list[str]:
    keys = []
    for ident in ref.get("identifiers") or []:
        if ident.get("system") and ident.get("value"):
            keys.append(f"{ident['system']}|{ident['value']}")
    if ref.get("id"):
        keys.append(f"{kind}/{ref['id']}")
    if ref.get("name"):
        keys.append("name:" + norm_name(ref["name"]))
    return keys


def open_state(entry: _Entry, hours: Hours | None, mow: int) -> bool | None:
    if hours is not None:  # a site with its own hours
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


def next_opening(ranges: list[tuple[int, int]], mow: int) -> int | None:
    starts = sorted(a for a, _ in ranges)
    for a in starts:
        if a > mow:
            return a
    return starts[0] + WEEK if starts else None


def is_placed(context: dict[str, Any] | None) -> bool:
    """Does the launch say where the visit is (an encounter with a location or an organization)?"""
    encounter = (context or {}).get("encounter") or {}
    return bool(encounter.get("locations") or encounter.get("service_provider"))


def rank(index: DirectoryIndex, *, context: dict[str, Any] | None = None, safe_zip: str | None = None,
         needs: list[str] | tuple[str, ...] = (), language: str = "en", now: datetime | None = None,
         limit: int = 10, site_map: dict[str, str] | None = None,
         default_programs: list[str] | tuple[str, ...] = ()) -> Ranking:
    """Ranked services for one patient visit; each result says why it is listed.

    ``default_programs`` (the deployment's): offered when the launch does not say where the visit is
    (no encounter, or one without location or organization), so the clinician still sees the hospital
    system's own programs. A visit at a known place outside them (another hospital) gets none."""
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    mow = minute_of_week(now, index.timezone)
    today = now.astimezone(ZoneInfo(index.timezone)).date()
    calendar = index.directory.holidays
    holiday = holiday_name(today, calendar)
    placed = is_placed(context)
    lang = (language or "en").split("-")[0].lower()
    wanted = [n for n in dict.fromkeys(needs) if n in NEED_BIT]
    mask = 0
    for n in wanted:
        for syn in NEED_SYNONYMS.get(n, (n,)):
            mask |= NEED_BIT[syn]

    site, site_service, on_site = index.match_site(context, site_map)
    zip_code = normalise_zip(safe_zip)
    zip_unknown = bool(safe_zip) and (zip_code is None or centroid(zip_code) is None)
    origin = centroid(zip_code) if zip_code else None
    origin_kind = "zip" if origin else "none"
    if origin is None:
        origin = index.site_origin(context, site)
        if origin is not None:
            origin_kind = "site"

    candidates: dict[int, tuple[float | None, int | None]] = {}
    if site_service is not None:
        i = index.by_id[site_service.id]
        candidates[i] = (None, None)
    defaults = set()
    if site_service is None and not placed:
        for sid in default_programs:
            if sid in index.by_id:
                defaults.add(index.by_id[sid])
                candidates.setdefault(index.by_id[sid], (None, None))
    for need in wanted or [None]:
        for i in (index.wide_by_need.get(need, []) if need else index.wide_all):
            candidates.setdefault(i, (None, None))
    if origin is not None:
        for i, (d, si) in index.nearby(origin, mask, max(limit * 3, 30)).items():
            prev = candidates.get(i)
            if prev is None or prev[0] is None:
                candidates[i] = (d, si)

    results: list[Result] = []
    site_idx = index.by_id.get(site_service.id) if site_service else None
    for i, (dist, si) in candidates.items():
        e = index.entries[i]
        s = e.service
        is_site = i == site_idx
        if mask and not is_site and not e.mask & mask:
            continue
        shown_site = site if (is_site and site is not None) else (s.sites[si] if si is not None else None)
        if is_site and origin_kind == "zip":
            # From the ZIP's centroid to the site shown (not to whichever of its sites is nearest).
            dist = _nearest_site_miles(s, origin, site)
        if s.region is not None and not is_site and i not in defaults:
            where = origin if origin is not None else None
            if where is None and placed:
                continue  # a known visit site we cannot place: do not offer another region's program
            if where is not None and miles(where, (s.region.lat, s.region.lon)) > s.region.miles:
                continue  # local-only program, not for this visit or ZIP (Boston's rape crisis centre in Springfield)
        reasons: list[Reason] = []
        score = 0.0
        if is_site:
            health_center = on_site and site is not None and site.kind == "health-center"
            reasons.append(Reason(("on_site_health_center" if health_center else "on_site") if on_site
                                  else "serves_site"))
        elif i in defaults:
            reasons.append(Reason("default_program"))
            score += 30
        is_open = open_state(e, shown_site.hours if shown_site else None, mow)
        closed_why = closure(s, today, calendar) if is_open is True and not e.always else None
        if closed_why:
            is_open = False
            reasons.append(Reason("holiday", {"name": closed_why}))
        call = s.main_phone()
        if is_open is True:
            reasons.append(Reason("always" if e.always else "open_now"))
            score += 8
        elif is_open is False:
            pager = s.after_hours_phone()
            if pager is not None:
                reasons.append(Reason("after_hours", {"phone": pager.dial()}))
                call = pager
                score += 4
            else:
                reasons.append(Reason("closed"))
        if lang != "en":
            if lang in s.languages:
                reasons.append(Reason("speaks", {"language": LANGUAGE_NAMES.get(lang, lang)}))
                score += 15
            elif s.interpreters:
                reasons.append(Reason("interpreters"))
                score += 5
        # Name what the program offers for each stated need (HAVEN: "court accompaniment", not "legal help").
        met = [next(x for x in NEED_SYNONYMS.get(n, (n,)) if NEED_BIT[x] & e.mask) for n in wanted
               if any(NEED_BIT[x] & e.mask for x in NEED_SYNONYMS.get(n, (n,)))]
        if met:
            reasons.append(Reason("needs", {"needs": ", ".join(NEED_LABELS[n] for n in dict.fromkeys(met))}))
            score += 20 * len(met)
        if dist is not None:
            shown = f"{dist:.1f}"
            if origin_kind == "zip":
                reasons.append(Reason("distance_zip", {"miles": shown, "zip": zip_code or ""}))
            elif origin_kind == "site" and not is_site:
                hc = site is not None and site.kind == "health-center"
                reasons.append(Reason("distance_site_health_center" if hc else "distance_site", {"miles": shown}))
            score -= min(dist, MAX_MILES) * 0.5
        if e.wide:
            score += 2  # reachable from anywhere
        results.append(Result(s, shown_site, is_site and on_site, is_open, dist, call, reasons, score))

    results.sort(key=lambda r: (0 if r.service is site_service else 1, -r.score, r.distance or 0.0, r.service.id))
    results = results[:limit]
    return Ranking(results=results, site=site, site_service=site_service, origin=origin_kind,
                   zip_code=zip_code if not zip_unknown else None, zip_unknown=zip_unknown,
                   emergency=list(index.emergency), placed=placed, holiday=holiday,
                   call_now=call_now(results, site_service, {index.entries[i].service.id for i in defaults}, today,
                                     calendar))


def call_now(results: list[Result], site_service: Service | None, defaults: set[str], today: Any,
             calendar: tuple[str, str | None]) -> list[CallNow]:
    """Who to call at this hour: the visit's program (or, with no known site, the deployment's default
    programs), each on its main line when open and its pager otherwise; then the first 24/7 line."""
    out: list[CallNow] = []
    for r in results:
        s = r.service
        if not (s is site_service or s.id in defaults) or r.call is None:
            continue
        state = "open" if r.open_now else "after_hours" if r.call.after_hours else "open"
        if r.open_now is None:
            state = "open"
        out.append(CallNow(s, r.call, state, closure(s, today, calendar)))
    hotline = next((r for r in results if r.open_now is True and r.service.hours.always and r.call is not None
                    and r.service.kind == "hotline" and r.service.scope != "local"), None)
    if hotline is not None:
        out.append(CallNow(hotline.service, hotline.call, "always"))
    return out


def _nearest_site_miles(s: Service, origin: tuple[float, float], site: Site | None) -> float | None:
    points = [(t.lat, t.lon) for t in ([site] if site else s.sites) if t.lat is not None and t.lon is not None]
    return min((miles(origin, p) for p in points), default=None)


def describe_hours(hours: Hours, lang: str = "en") -> str:
    """'Mon-Fri 8:30am-5:30pm' (used by the page and the handout)."""
    if hours.always:
        return "24/7"
    if not hours.known or not hours.weekly:
        return ""
    names = {"en": ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"),
             "es": ("lun", "mar", "mié", "jue", "vie", "sáb", "dom"),
             "pt": ("seg", "ter", "qua", "qui", "sex", "sáb", "dom")}.get(lang, ("Mon", "Tue", "Wed", "Thu", "Fri",
                                                                                 "Sat", "Sun"))
    parts = []
    for iv in hours.weekly:
        idx = [DAYS.index(d) for d in iv.days]
        if len(idx) > 2 and idx == list(range(idx[0], idx[-1] + 1)):
            days = f"{names[idx[0]]}-{names[idx[-1]]}"
        else:
            days = ", ".join(names[i] for i in idx)
        parts.append(f"{days} {fmt_minutes(iv.opens, lang)}-{fmt_minutes(iv.closes, lang)}")
    return "; ".join(parts)
