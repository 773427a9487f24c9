"""Everything a ranking query needs of a directory, built once when the directory is loaded: need bit masks,
minute-of-week opening ranges, match tables from an encounter's keys to a site or program, the hotlines per
need, and a lat/lon grid, so a query touches only a few hundred entries even in a 50,000-service directory."""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from referrals.geography import centroid
from referrals.hours import week_ranges
from referrals.memory import paused_gc
from referrals.model import NEEDS, Directory, Service, Site
from referrals.visit import Visit

NEED_BIT = {need: 1 << i for i, need in enumerate(NEEDS)}
CELL = 0.02  # grid cell, degrees (~1.4 x 1 miles in Massachusetts): dense Boston cells stay small
MILES_PER_DEG = 69.05
MAX_MILES = 50.0  # local programs further than this from the origin are not listed
WIDE_PER_NEED = 25  # hotlines considered per stated need
# At or below this many located sites (decided when the index is built) a full scan beats walking grid cells;
# bench_nearby prints both at every size and the crossover.
BRUTE_FORCE_MAX_SITES = 700


@dataclass(slots=True)
class Entry:
    """One listed service and what a query tests it against."""

    service: Service
    mask: int  # the needs it meets, as NEED_BIT bits
    ranges: list[tuple[int, int]] | None  # opening minutes of the week; None: 24/7; [] with known False: unknown
    always: bool
    known: bool
    wide: bool  # hotline / statewide / national: listed without a nearby site


def _entry(s: Service, shared_ranges: dict[int, list[tuple[int, int]]]) -> Entry:
    mask = 0
    for n in s.needs:
        mask |= NEED_BIT.get(n, 0)
    # Listed without a nearby site: hotlines, statewide/national services, and any service whose sites have no
    # coordinates (it could never be found by distance).
    wide = s.kind == "hotline" or s.scope != "local" or not any(t.lat is not None for t in s.sites)
    ranges = None
    if not s.hours.always:  # loaders share equal Hours: one range list each
        ranges = shared_ranges.get(id(s.hours))
        if ranges is None:
            ranges = shared_ranges[id(s.hours)] = week_ranges(s.hours)
    return Entry(s, mask, ranges, s.hours.always, s.hours.known, wide)


class DirectoryIndex:
    """A directory plus everything a query needs, built once at load."""

    def __init__(self, directory: Directory):
        with paused_gc():  # an index of a large directory is millions of acyclic objects
            self._build(directory)

    def _build(self, directory: Directory) -> None:
        self.directory = directory
        self.timezone = directory.timezone
        self.entries: list[Entry] = []
        self.emergency: list[Service] = []
        self.by_id: dict[str, int] = {}
        # Match keys -> the first service (in directory order) with that key: a query only ever takes the first.
        # Names ("name:" keys of a ``Place``) have their own tables keyed by the normalised name itself, the
        # string the match rules already hold.
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
        shared_ranges: dict[int, list[tuple[int, int]]] = {}
        for s in directory.services:
            if s.kind == "emergency":
                self.emergency.append(s)
                continue
            i = len(self.entries)
            self.by_id[s.id] = i
            self.entries.append(_entry(s, shared_ranges))
            if self.entries[i].wide:
                wide_all.append(i)
            for k, site in enumerate(s.sites):
                self._add_site(i, k, site, points)
            self._add_served(i, s)
        if self.located_sites <= BRUTE_FORCE_MAX_SITES:  # (decided here: the grid answers larger directories)
            self.points = points
        self._add_wide(wide_all)

    def _add_site(self, i: int, k: int, site: Site, points: list[Any]) -> None:
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

    def _add_served(self, i: int, s: Service) -> None:
        for key in (*s.serves.identifiers, *s.serves.organizations):
            if "|" not in key and "/" not in key:  # an organization's name
                self.serve_names.setdefault(key, i)
            elif key.startswith("name:"):
                self.serve_names.setdefault(key[5:], i)
            else:
                self.serve_keys.setdefault(key, i)
        for name in s.serves.names:
            self.serve_names.setdefault(name, i)

    def _add_wide(self, wide_all: list[int]) -> None:
        # Hotlines: 24/7 first, then by id, so a query takes the first few per need in O(1).
        wide_all.sort(key=lambda i: (not self.entries[i].always, self.entries[i].service.id))
        self.wide_all = wide_all[:WIDE_PER_NEED * 2]
        self.wide_by_need: dict[str, list[int]] = {}
        for need, bit in NEED_BIT.items():
            self.wide_by_need[need] = [i for i in wide_all if self.entries[i].mask & bit][:WIDE_PER_NEED]

    # -- encounter -> site -------------------------------------------------------------------------
    def match_site(self, visit: Visit,
                   site_map: Mapping[str, str] | None = None) -> tuple[Site | None, Service | None, bool]:
        """(site, service, on_site) for the visit: its Locations first, then its serviceProvider. The
        deployment's ``site_map`` (EHR key -> directory site id) goes before the directory's own rules."""
        loc_keys, org_keys = visit.location_keys(), visit.organization_keys()
        mapped = self._mapped_site(loc_keys + org_keys, site_map) if site_map else None
        if mapped is not None:
            return mapped
        for keys in (loc_keys, org_keys):
            found = self._site_with(keys)
            if found is not None:
                return found
            served = self._service_serving(keys)
            if served is not None:
                return None, served, False
        return None, None, False

    def _mapped_site(self, keys: list[str], site_map: Mapping[str, str]) -> tuple[Site, Service, bool] | None:
        for key in keys:
            mapped = site_map.get(key)
            if not mapped:
                continue
            for entry in self.entries:
                for site in entry.service.sites:
                    if site.id == mapped:
                        return site, entry.service, True
        return None

    def _site_with(self, keys: list[str]) -> tuple[Site, Service, bool] | None:
        for key in keys:
            hit = self.site_names.get(key[5:]) if key.startswith("name:") else self.site_keys.get(key)
            if hit:
                i, site = hit
                return site, self.entries[i].service, True
        return None

    def _service_serving(self, keys: list[str]) -> Service | None:
        for key in keys:
            served = self.serve_names.get(key[5:]) if key.startswith("name:") else self.serve_keys.get(key)
            if served is not None:
                return self.entries[served].service
        return None

    def site_origin(self, visit: Visit, site: Site | None) -> tuple[float, float] | None:
        """Where the visit happens (the site, or its Location's ZIP centroid): a safe origin, not the patient's
        home."""
        if site is not None and site.lat is not None and site.lon is not None:
            return site.lat, site.lon
        for loc in visit.locations:
            point = centroid(loc.postal_code)
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
