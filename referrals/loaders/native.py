"""Our own directory format (``format: ipv-directory/1``, YAML or JSON); see config/directory/boston.yaml."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from referrals.errors import Collector, DirectoryError, Issue
from referrals.geography import centroid
from referrals.loaders.common import (
    check_channel,
    check_coord,
    check_id,
    check_phone,
    finish,
    language_code,
    safe_url,
    weekly_interval,
)
from referrals.model import (
    NEEDS,
    Address,
    Directory,
    Hours,
    MatchRules,
    Phone,
    Region,
    Service,
    Site,
    Text,
    is_reference,
    norm_name,
)

FORMAT = "ipv-directory/1"
KINDS = ("program", "hotline", "emergency")
SCOPES = ("local", "statewide", "national")
SITE_KINDS = ("hospital", "health-center")
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # C loader: the 50k-service import stays fast


def read_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DirectoryError([Issue(str(path), "", f"cannot read: {exc.__class__.__name__}")]) from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.load(text, Loader=_Loader)  # noqa: S506
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else (
            f"line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else "")
        reason = getattr(exc, "problem", None) or getattr(exc, "msg", None) or "syntax error"
        raise DirectoryError([Issue(str(path), where, f"not valid YAML/JSON: {reason}")]) from None
    if not isinstance(data, dict):
        raise DirectoryError([Issue(str(path), "", "top level must be a mapping")])
    return data


def load_native(path: Path) -> Directory:
    return parse_native(read_mapping(path), str(path))


def parse_text(c: Collector, where: str, value: Any, required: bool = False) -> Text:
    if value is None:
        if required:
            c.add(where, "required")
        return {}
    if isinstance(value, str):
        return {"en": value}
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        if required and not any(v.strip() for v in value.values()):
            c.add(where, "must not be empty")
        return dict(value)
    c.add(where, "must be a string or a mapping of language code to string ({en: ..., es: ...})")
    return {}


def parse_hours(c: Collector, where: str, value: Any) -> Hours:
    if value is None or value == "unknown":
        return Hours.unknown()
    if value == "always" or (isinstance(value, dict) and value.get("always") is True):
        return Hours(always=True)
    if not isinstance(value, dict) or not isinstance(value.get("weekly"), list) or not value["weekly"]:
        c.add(where, "hours must be 'always', 'unknown' or {weekly: [{days, opens, closes}, ...]}")
        return Hours.unknown()
    intervals = []
    for k, iv in enumerate(value["weekly"]):
        w = f"{where}.weekly[{k}]"
        if not isinstance(iv, dict):
            c.add(w, "must be a mapping {days, opens, closes}")
            continue
        parsed = weekly_interval(c, w, iv.get("days"), iv.get("opens"), iv.get("closes"))
        if parsed:
            intervals.append(parsed)
    return Hours(weekly=intervals, note=parse_text(c, f"{where}.note", value.get("note")))


def parse_match(c: Collector, where: str, value: Any) -> MatchRules:
    rules = MatchRules()
    if value is None:
        return rules
    if not isinstance(value, dict):
        c.add(where, "must be a mapping {identifiers, names, organizations}")
        return rules
    for key in ("identifiers", "names", "organizations"):
        items = value.get(key, [])
        if not isinstance(items, list) or not all(isinstance(x, str) and x.strip() for x in items):
            c.add(f"{where}.{key}", "must be a list of non-empty strings")
            continue
        if key == "identifiers":
            for k, ident in enumerate(items):
                if "|" not in ident and not is_reference(ident):
                    c.add(f"{where}.identifiers[{k}]",
                          "identifier must be 'system|value' or a reference 'Location/<id>' / 'Organization/<id>'")
            rules.identifiers.update(items)
        elif key == "names":
            rules.names.update(norm_name(x) for x in items)
        else:
            rules.organizations.update(x if "|" in x or is_reference(x) else norm_name(x) for x in items)
    return rules


def parse_phone(c: Collector, where: str, value: Any) -> Phone | None:
    if not isinstance(value, dict):
        c.add(where, "must be a mapping {number, label, hours, ...}")
        return None
    channel = check_channel(c, f"{where}.channel", value.get("channel", "voice"))
    number = value.get("number")
    if channel == "chat":  # a chat "number" is its web address or name
        if not isinstance(number, str) or not number.strip():
            c.add(f"{where}.number", "required")
            return None
    else:
        number = check_phone(c, f"{where}.number", number)
        if number is None:
            return None
    ext = value.get("ext")
    if ext is not None and not (isinstance(ext, str | int) and str(ext).isdigit()):
        c.add(f"{where}.ext", "extension must be digits")
        ext = None
    url = value.get("url")
    if url is not None and not (isinstance(url, str) and url.startswith("https://")):
        c.add(f"{where}.url", "url must start with https://")
        url = None
    return Phone(number=number, channel=channel, ext=str(ext) if ext is not None else None,
                 label=parse_text(c, f"{where}.label", value.get("label")),
                 hours=parse_hours(c, f"{where}.hours", value.get("hours")),
                 after_hours=bool(value.get("after_hours", False)), url=url)


def parse_site(c: Collector, where: str, value: Any) -> Site | None:
    if not isinstance(value, dict):
        c.add(where, "must be a mapping")
        return None
    sid = check_id(c, f"{where}.id", value.get("id"))
    address = None
    raw = value.get("address")
    if raw is not None:
        if not isinstance(raw, dict):
            c.add(f"{where}.address", "must be a mapping {line, city, state, postal_code}")
        else:
            bad = [k for k in ("line", "city", "state", "postal_code") if raw.get(k) is not None
                   and not isinstance(raw.get(k), str)]
            for k in bad:
                c.add(f"{where}.address.{k}", "must be a string (quote ZIP codes: \"02115\")")
            address = Address(line=raw.get("line"), city=raw.get("city"), state=raw.get("state"),
                              postal_code=raw.get("postal_code"), confirm=bool(raw.get("confirm")))
    lat = check_coord(c, f"{where}.lat", value.get("lat"), 90)
    lon = check_coord(c, f"{where}.lon", value.get("lon"), 180)
    if (lat is None) != (lon is None):
        c.add(where, "give both lat and lon, or neither")
    hours = parse_hours(c, f"{where}.hours", value["hours"]) if "hours" in value else None
    if sid is None:
        return None
    kind = value.get("kind", "hospital")
    if kind not in SITE_KINDS:
        c.add(f"{where}.kind", f"must be one of {', '.join(SITE_KINDS)}")
        kind = "hospital"
    return Site(id=sid, name=parse_text(c, f"{where}.name", value.get("name"), required=True), address=address,
                lat=lat, lon=lon, coords_source="added" if lat is not None else None,
                match=parse_match(c, f"{where}.match", value.get("match")), hours=hours, kind=kind)


def parse_region(c: Collector, where: str, value: Any) -> Region | None:
    """{zip: "02108", miles: 25} or {lat, lon, miles}: the area a local-only program serves."""
    if value is None:
        return None
    if not isinstance(value, dict):
        c.add(where, "must be a mapping {zip, miles} or {lat, lon, miles}")
        return None
    miles = value.get("miles")
    if not isinstance(miles, int | float) or isinstance(miles, bool) or miles <= 0:
        c.add(f"{where}.miles", "must be a positive number")
        return None
    if value.get("zip") is not None:
        point = centroid(str(value["zip"]))
        if point is None:
            c.add(f"{where}.zip", f"unknown ZIP code {value['zip']!r} (quote it: \"02108\")")
            return None
    else:
        lat = check_coord(c, f"{where}.lat", value.get("lat"), 90)
        lon = check_coord(c, f"{where}.lon", value.get("lon"), 180)
        if lat is None or lon is None:
            c.add(where, "give zip, or both lat and lon")
            return None
        point = (lat, lon)
    return Region(point[0], point[1], float(miles), bool(value.get("confirm")))


def parse_closures(c: Collector, where: str, value: Any) -> dict[str, str]:
    """[{date: 2026-11-27, note: ...}, ...] or a list of dates: days the program is closed."""
    out: dict[str, str] = {}
    if value is None:
        return out
    if not isinstance(value, list):
        c.add(where, "must be a list of dates or {date, note}")
        return out
    for k, item in enumerate(value):
        raw, note = (item.get("date"), item.get("note") or "") if isinstance(item, dict) else (item, "")
        try:
            day = raw if isinstance(raw, date) else date.fromisoformat(str(raw))
        except ValueError:
            c.add(f"{where}[{k}]", f"not a date (YYYY-MM-DD): {raw!r}")
            continue
        out[day.isoformat()] = str(note)
    return out


def parse_service(c: Collector, where: str, value: Any) -> Service | None:
    if not isinstance(value, dict):
        c.add(where, "must be a mapping")
        return None
    sid = check_id(c, f"{where}.id", value.get("id"))
    program = value.get("program")
    if not isinstance(program, str) or not program.strip():
        c.add(f"{where}.program", "required (the program's published name)")
    kind = value.get("kind", "program")
    if kind not in KINDS:
        c.add(f"{where}.kind", f"must be one of {', '.join(KINDS)}")
    scope = value.get("scope", "local")
    if scope not in SCOPES:
        c.add(f"{where}.scope", f"must be one of {', '.join(SCOPES)}")
    needs = value.get("needs", [])
    if not isinstance(needs, list) or any(n not in NEEDS for n in needs):
        c.add(f"{where}.needs", f"must be a list of: {', '.join(NEEDS)}")
        needs = []
    langs: set[str] = set()
    raw_langs = value.get("languages", [])
    if not isinstance(raw_langs, list):
        c.add(f"{where}.languages", "must be a list of ISO 639 codes")
    else:
        for k, lang in enumerate(raw_langs):
            code = language_code(lang)
            if code is None:
                c.add(f"{where}.languages[{k}]", f"not a language code: {lang!r}")
            else:
                langs.add(code)
    phones_raw = value.get("phones")
    if not isinstance(phones_raw, list) or not phones_raw:
        c.add(f"{where}.phones", "at least one phone is required")
        phones_raw = []
    phones = [p for k, x in enumerate(phones_raw) if (p := parse_phone(c, f"{where}.phones[{k}]", x))]
    sites_raw = value.get("sites", [])
    if not isinstance(sites_raw, list):
        c.add(f"{where}.sites", "must be a list")
        sites_raw = []
    sites = [s for k, x in enumerate(sites_raw) if (s := parse_site(c, f"{where}.sites[{k}]", x))]
    offers_raw = value.get("offers", [])
    if not isinstance(offers_raw, list):
        c.add(f"{where}.offers", "must be a list")
        offers_raw = []
    offers = [parse_text(c, f"{where}.offers[{k}]", x) for k, x in enumerate(offers_raw)]
    source = value.get("source", {})
    if not isinstance(source, dict):
        c.add(f"{where}.source", "must be a mapping {ref, quote}")
        source = {}
    if sid is None or not isinstance(program, str):
        return None
    return Service(
        id=sid, program=program.strip(), kind=kind, scope=scope,
        name=parse_text(c, f"{where}.name", value.get("name"), required=True),
        description=parse_text(c, f"{where}.description", value.get("description")),
        offers=offers, needs=set(needs), languages=langs, interpreters=bool(value.get("interpreters", False)),
        language_note=parse_text(c, f"{where}.language_note", value.get("language_note")),
        phones=phones, hours=parse_hours(c, f"{where}.hours", value.get("hours")), sites=sites,
        serves=parse_match(c, f"{where}.serves", value.get("serves")),
        confidential_address=bool(value.get("confidential_address", False)),
        discreet_name=parse_text(c, f"{where}.discreet_name", value.get("discreet_name")),
        url=safe_url(value.get("url")), source=source,
        region=parse_region(c, f"{where}.region", value.get("region")),
        closures=parse_closures(c, f"{where}.closures", value.get("closures")),
        observes_holidays=bool(value.get("observes_holidays", True)),
    )


def parse_native(data: dict[str, Any], file: str) -> Directory:
    c = Collector(file)
    if data.get("format") != FORMAT:
        c.add("format", f"must be {FORMAT!r}")
    tz = data.get("timezone", "America/New_York")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(str(tz))
    except (KeyError, ValueError, OSError):
        c.add("timezone", f"unknown time zone {tz!r}")
        tz = "America/New_York"
    services_raw = data.get("services")
    if not isinstance(services_raw, list) or not services_raw:
        c.add("services", "must be a non-empty list")
        services_raw = []
    services = [s for i, x in enumerate(services_raw) if (s := parse_service(c, f"services[{i}]", x))]
    cal = data.get("holidays", {"country": "US", "subdiv": "MA"})
    if not (isinstance(cal, dict) and isinstance(cal.get("country"), str)):
        c.add("holidays", "must be {country: US, subdiv: MA} (the holiday calendar for opening hours)")
        cal = {"country": "US", "subdiv": "MA"}
    directory = finish(c, services, str(tz), {"file": file, "format": "native"})
    directory.holidays = (cal["country"], cal.get("subdiv"))
    directory.sources = [{"file": file, "format": "native", "cites": data.get("sources", [])}]
    return directory


def dump_native(directory: Directory) -> dict[str, Any]:
    """The Directory back in our format (what ``ipv-directory import`` writes)."""

    def hours(h: Hours | None) -> Any:
        if h is None:
            return None
        if h.always:
            return "always"
        if not h.known:
            return "unknown"
        out: dict[str, Any] = {"weekly": [{"days": list(iv.days), "opens": f"{iv.opens // 60:02d}:{iv.opens % 60:02d}",
                                           "closes": f"{iv.closes // 60:02d}:{iv.closes % 60:02d}"}
                                          for iv in h.weekly]}
        if h.note:
            out["note"] = h.note
        return out

    def match(m: MatchRules) -> dict[str, list[str]]:
        return {"identifiers": sorted(m.identifiers), "names": sorted(m.names),
                "organizations": sorted(m.organizations)}

    services = []
    for s in directory.services:
        services.append({
            "id": s.id, "program": s.program, "kind": s.kind, "scope": s.scope, "name": s.name,
            "description": s.description, "offers": s.offers, "needs": sorted(s.needs),
            "languages": sorted(s.languages), "interpreters": s.interpreters, "language_note": s.language_note,
            "hours": hours(s.hours), "confidential_address": s.confidential_address,
            "discreet_name": s.discreet_name, "url": s.url, "source": s.source, "serves": match(s.serves),
            "phones": [{"number": p.number, "channel": p.channel, "ext": p.ext, "label": p.label,
                        "hours": hours(p.hours), "after_hours": p.after_hours, "url": p.url} for p in s.phones],
            "sites": [{"id": t.id, "name": t.name, "lat": t.lat, "lon": t.lon, "hours": hours(t.hours),
                       "address": None if t.address is None else {
                           "line": t.address.line, "city": t.address.city, "state": t.address.state,
                           "postal_code": t.address.postal_code, "confirm": t.address.confirm},
                       "match": match(t.match)} for t in s.sites],
        })
    for svc in services:  # drop empty optional keys so the file stays readable
        for key in [k for k, v in svc.items() if v in (None, {}, [], ())]:
            del svc[key]
        for site in svc.get("sites", []):
            for key in [k for k, v in site.items() if v is None]:
                del site[key]
    return {"format": FORMAT, "timezone": directory.timezone,
            "sources": [{k: v for k, v in src.items() if isinstance(v, str | int | float)}
                        for src in directory.sources], "services": services}
