"""Helpers the loaders share: typed field readers that record issues instead of raising,
need/language normalisation, and final cross-checks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from referrals.errors import Collector, DirectoryError, Issue
from referrals.geography import centroid, normalise_zip
from referrals.hours import parse_days, parse_time, strip_offset
from referrals.model import CHANNELS, NEEDS, Directory, Hours, Interval, Service, Site, compact_services

_LANG = re.compile(r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
_PHONE = re.compile(r"^[0-9+().\-\s]{3,25}$")

# Words in taxonomy terms / FHIR codes that tell us which need a service meets.
NEED_WORDS: tuple[tuple[str, str], ...] = (
    ("209a", "legal"), ("restraining", "legal"), ("protective order", "legal"), ("legal", "legal"),
    ("court", "legal"), ("shelter", "shelter"), ("safe home", "shelter"), ("housing", "housing"),
    ("counsel", "counselling"), ("therapy", "counselling"), ("sexual assault", "sexual-assault"),
    ("sexual-assault", "sexual-assault"), ("rape", "sexual-assault"), ("safety plan", "safety-planning"),
    ("safety-plan", "safety-planning"), ("support group", "support-groups"), ("support-group", "support-groups"),
    ("accompan", "accompaniment"), ("crisis", "crisis"), ("hotline", "crisis"), ("advoca", "advocacy"),
)
LANGUAGE_NAMES = {"english": "en", "spanish": "es", "español": "es", "portuguese": "pt", "haitian creole": "ht",
                  "chinese": "zh", "vietnamese": "vi", "arabic": "ar", "russian": "ru", "french": "fr"}


SAFE_URL_SCHEMES = ("https", "http", "tel")


def safe_url(value: Any) -> str | None:
    """``value`` if it is an https:, http: or tel: URL (a ``javascript:`` or ``data:`` URL
    from an imported directory must never become a link); None otherwise."""
    if not isinstance(value, str):
        return None
    url = value.strip()
    if not url or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        return None
    scheme, sep, rest = url.partition(":")
    if not sep or scheme.lower() not in SAFE_URL_SCHEMES or not rest:
        return None
    if scheme.lower() in ("http", "https") and not rest.startswith("//"):
        return None
    return url


def read_text(path: Path) -> str:
    """A source file's text, or a DirectoryError naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DirectoryError([Issue(str(path), "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DirectoryError([Issue(str(path), "", f"cannot read: {exc.__class__.__name__}")]) from None


def _json_error(path: Path, exc: json.JSONDecodeError) -> DirectoryError:
    return DirectoryError([Issue(str(path), f"line {exc.lineno}, column {exc.colno}", f"not valid JSON: {exc.msg}")])


def read_json(path: Path, text: str | None = None) -> Any:
    """A JSON source file, or a DirectoryError naming the file (and the line and column of a syntax error)."""
    try:
        return json.loads(read_text(path) if text is None else text)
    except json.JSONDecodeError as exc:
        raise _json_error(path, exc) from None


def _whole_text_error(text: str, exc: json.JSONDecodeError) -> json.JSONDecodeError:
    # The error exactly as decoding the whole text reports it (a refused file costs a second parse; the message
    # then never depends on where the item-by-item reading noticed the problem, whatever the Python version).
    try:
        json.loads(text)
    except json.JSONDecodeError as whole:
        return whole
    return exc


_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")  # JSON's whitespace


def json_array_items(path: Path, text: str) -> Iterator[Any] | None:
    """The items of a document that is a JSON array, decoded one at a time; None for any other document.

    A large directory is a large array of services: decoded whole, its parse tree (many times the file) exists
    all at once beside the directory built from it, and the import's peak memory with it (bench_directory prints
    the peak with and without this). One item at a time, each item's parse is freed before the next. A syntax
    error is reported exactly as ``read_json`` reports it; it surfaces when the iteration reaches it, so the
    caller must consume the iterator to the end."""
    pos = _SPACE.match(text).end()
    if not text.startswith("[", pos):
        return None
    return _array_items(path, text, pos)


def _array_items(path: Path, text: str, pos: int) -> Iterator[Any]:
    try:
        pos = _SPACE.match(text, pos + 1).end()
        if text.startswith("]", pos):
            pos += 1
        else:
            while True:
                item, pos = _DECODER.raw_decode(text, pos)
                yield item
                del item
                pos = _SPACE.match(text, pos).end()
                if text.startswith("]", pos):
                    pos += 1
                    break
                if not text.startswith(",", pos):
                    raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
                pos = _SPACE.match(text, pos + 1).end()
        end = _SPACE.match(text, pos).end()
        if end != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
    except json.JSONDecodeError as exc:
        raise _json_error(path, _whole_text_error(text, exc)) from None


def needs_from_words(*words: str | None) -> set[str]:
    """Needs named by taxonomy terms and codes (few distinct words, each looked up once)."""
    found: set[str] = set()
    for word in words:
        if word:
            # The cache keeps its keys: key it on a copy (lower()), never on a string of the parsed source,
            # which would pin that source's memory after the load.
            found |= _needs_of_word(word.lower())
    return found


def needs_in_text(*texts: str | None) -> set[str]:
    """Needs named in a service's own name or description: nearly every one is unique, so not cached (a cache
    would only hold thousands of them for no hit)."""
    found: set[str] = set()
    for text in texts:
        if text:
            found |= _needs_of(text.lower())
    return found


def _needs_of(word: str) -> frozenset[str]:
    w = word.replace("_", " ")
    if w in NEEDS:
        return frozenset((w,))
    return frozenset(need for key, need in NEED_WORDS if key in w)


@lru_cache(maxsize=8192)
def _needs_of_word(word: str) -> frozenset[str]:
    # Taxonomy terms repeat across thousands of services: look each one up once. ``word`` is lower-case.
    return _needs_of(word)


def language_code(value: Any) -> str | None:
    """ISO 639 code or English language name -> lower-case primary code; None when unusable."""
    if not isinstance(value, str) or not value.strip():
        return None
    v = value.strip()
    if v.lower() in LANGUAGE_NAMES:
        return LANGUAGE_NAMES[v.lower()]
    if _LANG.match(v):
        return v.split("-")[0].lower()
    return None


def check_id(c: Collector, where: str, value: Any) -> str | None:
    if not isinstance(value, str) or not _ID.match(value):
        c.add(where, "id must be 1-128 letters, digits, '.', '_', ':' or '-'")
        return None
    return value


def check_phone(c: Collector, where: str, value: Any) -> str | None:
    if isinstance(value, int):
        value = str(value)
    if not isinstance(value, str) or not _PHONE.match(value) or sum(ch.isdigit() for ch in value) < 3:
        c.add(where, f"not a phone number: {value!r}")
        return None
    return value.strip()


def check_channel(c: Collector, where: str, value: Any) -> str:
    if value in CHANNELS:
        return value
    c.add(where, f"channel must be one of {', '.join(CHANNELS)}")
    return "voice"


def check_coord(c: Collector, where: str, value: Any, limit: float) -> float | None:
    if value in (None, ""):
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        c.add(where, f"not a number: {value!r}")
        return None
    if not -limit <= f <= limit or f != f:
        c.add(where, f"out of range (-{limit}..{limit}): {value!r}")
        return None
    return f


def weekly_interval(c: Collector, where: str, days: Any, opens: Any, closes: Any) -> Interval | None:
    try:
        d = parse_days(days)
        o = parse_time(strip_offset(opens) if isinstance(opens, str) else opens)
        cl = parse_time(strip_offset(closes) if isinstance(closes, str) else closes)
    except ValueError as exc:
        c.add(where, str(exc))
        return None
    if o == cl and not (o == 0):
        c.add(where, "opens and closes at the same time")
        return None
    return Interval(days=d, opens=o, closes=cl % (24 * 60))


def place_site(site: Site) -> None:
    """Coordinates from the ZIP centroid when the source gives none (flagged as such)."""
    if site.lat is None or site.lon is None:
        zc = site.address.postal_code if site.address else None
        point = centroid(zc)
        if point:
            site.lat, site.lon = point
            site.coords_source = "zip-centroid"
    elif not site.coords_source:
        site.coords_source = "source"
    if site.address and site.address.postal_code:
        site.address.postal_code = normalise_zip(site.address.postal_code) or site.address.postal_code


def always_hours(opens: int, closes: int, days: tuple[str, ...]) -> bool:
    return len(days) == 7 and opens == 0 and closes in (0, 24 * 60 - 1)


def place_sites(service: Service) -> None:
    for site in service.sites:
        place_site(site)


def finish(c: Collector, services: list[Service], timezone: str, source: dict[str, Any],
           compacted: bool = False) -> Directory:
    """Cross-checks shared by all loaders, then the Directory (or all issues raised). ``compacted``: the loader
    already placed and compacted each service as it went (``place_sites``, ``Compactor.service``)."""
    seen: dict[str, int] = {}
    site_ids: dict[str, str] = {}
    for i, s in enumerate(services):
        if s.id in seen:
            c.add(f"services[{i}].id", f"duplicate service id {s.id!r} (also services[{seen[s.id]}])")
        seen.setdefault(s.id, i)
        if not s.phones:
            c.add(f"services[{i}]", f"service {s.id!r} has no phone: a patient could not reach it")
        for j, site in enumerate(s.sites):
            if site.id in site_ids and site_ids[site.id] != s.id:
                c.add(f"services[{i}].sites[{j}].id", f"site id {site.id!r} also used by {site_ids[site.id]!r}")
            site_ids.setdefault(site.id, s.id)
            if not compacted:
                place_site(site)
    c.raise_if_any()
    if not compacted:
        compact_services(services)
    return Directory(services=services, timezone=timezone, sources=[source])


def hours_always() -> Hours:
    return Hours(always=True)
