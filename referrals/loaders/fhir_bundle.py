"""FHIR R4 Bundle of HealthcareService, Location and Organization (e.g. a payer or state directory
export, or a search result from an EHR's directory). Errors name the JSON path ("entry[3].resource.telecom[0]").

HealthcareService -> Service; .location -> sites (Location.position or the address ZIP centroid);
.providedBy -> program name and the organizations it serves; .availableTime -> hours;
.communication -> languages; category/type/specialty/name words -> needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from referrals.errors import Collector, DirectoryError, Issue
from referrals.loaders.common import (
    check_coord,
    check_id,
    check_phone,
    finish,
    language_code,
    needs_from_words,
    needs_in_text,
    read_json,
    weekly_interval,
)
from referrals.model import Address, Directory, Hours, MatchRules, Phone, Service, Site, norm_name

FHIR_DAYS = {"mon": "MO", "tue": "TU", "wed": "WE", "thu": "TH", "fri": "FR", "sat": "SA", "sun": "SU"}


def load_fhir_bundle(path: Path, timezone: str = "America/New_York") -> Directory:
    data = read_json(path)
    return parse_bundle(data, str(path), timezone)


def _seq(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _items(c: Collector, where: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        c.add(where, "must be a list")
        return []
    return value


def _codings_words(value: Any) -> list[str]:
    words: list[str] = []
    for cc in value if isinstance(value, list) else [value]:
        if not isinstance(cc, dict):
            continue
        if isinstance(cc.get("text"), str):
            words.append(cc["text"])
        for coding in _seq(cc.get("coding")):
            if isinstance(coding, dict):
                words += [str(coding[k]) for k in ("code", "display") if isinstance(coding.get(k), str)]
    return words


def _ref_id(ref: Any, kind: str) -> str | None:
    """'Location/x', 'https://host/fhir/Location/x' or 'Location/x/_history/2' -> 'x'."""
    if isinstance(ref, dict) and isinstance(ref.get("reference"), str):
        r = ref["reference"]
        if r.startswith(f"{kind}/"):
            return r.split("/")[1]
        if f"/{kind}/" in r:
            return r.rsplit(f"/{kind}/", 1)[1].split("/")[0]
    return None


def parse_hours(c: Collector, where: str, times: Any) -> Hours:
    if not times:
        return Hours.unknown()
    if not isinstance(times, list):
        c.add(where, "availableTime must be a list")
        return Hours.unknown()
    intervals = []
    for k, t in enumerate(times):
        w = f"{where}[{k}]"
        if not isinstance(t, dict):
            c.add(w, "must be an object")
            continue
        days = t.get("daysOfWeek") or list(FHIR_DAYS)
        if not isinstance(days, list) or any(not isinstance(d, str) or d not in FHIR_DAYS for d in days):
            c.add(f"{w}.daysOfWeek", "must be a list of mon..sun")
            continue
        if t.get("allDay") is True:
            if len(days) == 7:
                return Hours(always=True)
            opens, closes = "00:00", "24:00"
        else:
            opens, closes = t.get("availableStartTime"), t.get("availableEndTime")
        iv = weekly_interval(c, w, [FHIR_DAYS[d] for d in days], opens, closes)
        if iv:
            intervals.append(iv)
    return Hours(weekly=intervals) if intervals else Hours.unknown()


def parse_bundle(data: Any, file: str, timezone: str = "America/New_York") -> Directory:
    c = Collector(file)
    if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
        raise DirectoryError([Issue(file, "resourceType", "must be a FHIR Bundle")])
    entries = data.get("entry")
    if not isinstance(entries, list) or not entries:
        raise DirectoryError([Issue(file, "entry", "must be a non-empty list")])
    orgs: dict[str, tuple[str, dict[str, Any]]] = {}
    locs: dict[str, tuple[str, dict[str, Any]]] = {}
    services: list[tuple[str, dict[str, Any]]] = []
    for k, entry in enumerate(entries):
        w = f"entry[{k}].resource"
        res = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(res, dict):
            c.add(f"entry[{k}]", "entry without a resource")
            continue
        rtype = res.get("resourceType")
        rid = res.get("id")
        keys = [k2 for k2 in (f"{rtype}/{rid}" if rid else None, entry.get("fullUrl")) if isinstance(k2, str)]
        if rtype == "Organization":
            for key in keys:
                orgs[key] = (w, res)
        elif rtype == "Location":
            for key in keys:
                locs[key] = (w, res)
        elif rtype == "HealthcareService":
            services.append((w, res))
        # Other resource types (e.g. PractitionerRole, Endpoint) are ignored.
    if not services:
        c.add("entry", "no HealthcareService in the bundle")
    out = [s for w, res in services if (s := parse_service(c, w, res, orgs, locs))]
    return finish(c, out, timezone, {"file": file, "format": "fhir"})


def _lookup(table: dict[str, tuple[str, dict[str, Any]]], ref: Any, kind: str) -> tuple[str, dict[str, Any]] | None:
    if not isinstance(ref, dict) or not isinstance(ref.get("reference"), str):
        return None
    r = ref["reference"]
    if r in table:
        return table[r]
    rid = _ref_id(ref, kind)
    return table.get(f"{kind}/{rid}") if rid else None


def parse_site(c: Collector, w: str, loc: dict[str, Any], hides: bool) -> Site | None:
    sid = check_id(c, f"{w}.id", loc.get("id"))
    name = loc.get("name") if isinstance(loc.get("name"), str) else None
    pos = loc.get("position") or {}
    if not isinstance(pos, dict):
        c.add(f"{w}.position", "must be an object")
        pos = {}
    lat = check_coord(c, f"{w}.position.latitude", pos.get("latitude"), 90)
    lon = check_coord(c, f"{w}.position.longitude", pos.get("longitude"), 180)
    addr = loc.get("address")
    address = None
    if isinstance(addr, dict):
        lines = addr.get("line") if isinstance(addr.get("line"), list) else []
        address = Address(line=None if hides else (", ".join(str(x) for x in lines) or None),
                          city=addr.get("city") if isinstance(addr.get("city"), str) else None,
                          state=addr.get("state") if isinstance(addr.get("state"), str) else None,
                          postal_code=addr.get("postalCode") if isinstance(addr.get("postalCode"), str) else None)
    elif addr is not None:
        c.add(f"{w}.address", "must be an object")
    rules = MatchRules()
    if name:
        rules.names.add(norm_name(name))
    for k, ident in enumerate(_items(c, f"{w}.identifier", loc.get("identifier"))):
        if isinstance(ident, dict) and isinstance(ident.get("system"), str) and isinstance(ident.get("value"), str):
            rules.identifiers.add(f"{ident['system']}|{ident['value']}")
        else:
            c.add(f"{w}.identifier[{k}]", "identifier needs a system and a value")
    if sid:
        rules.identifiers.add(f"Location/{sid}")
    if sid is None:
        return None
    return Site(id=sid, name={"en": name or sid}, address=address, lat=lat, lon=lon,
                coords_source="source" if lat is not None and lon is not None else None, match=rules)


TELECOM_CHANNELS = {"phone": "voice", "sms": "text", "pager": "pager"}
IGNORED_TELECOM = ("url", "email", "fax", "other")


def parse_service(c: Collector, w: str, res: dict[str, Any], orgs: dict[str, tuple[str, dict[str, Any]]],
                  locs: dict[str, tuple[str, dict[str, Any]]]) -> Service | None:
    sid = check_id(c, f"{w}.id", res.get("id"))
    name = res.get("name")
    if not isinstance(name, str) or not name.strip():
        c.add(f"{w}.name", "required")
        name = None
    if res.get("active") is False:
        return None
    org_name, serves = _provider(c, w, res.get("providedBy"), orgs)
    words = [*_codings_words(res.get("category")), *_codings_words(res.get("type")),
             *_codings_words(res.get("specialty")), *_codings_words(res.get("program"))]
    needs = needs_in_text(name) | needs_from_words(*words) or {"advocacy"}
    hides = "shelter" in needs
    langs = _languages(c, w, res.get("communication"))
    hours = parse_hours(c, f"{w}.availableTime", res.get("availableTime"))
    phones = _phones(c, w, res.get("telecom"), hours)
    sites = _sites(c, w, res.get("location"), locs, hides)
    if sid is None or name is None:
        return None
    for site in sites:  # one Location may host several services: site ids are per service
        site.id = f"{sid}:{site.id}"
    comment = res.get("comment") if isinstance(res.get("comment"), str) else None
    return Service(id=sid, program=org_name or name, name={"en": name}, kind="program",
                   description={"en": comment} if comment else {}, needs=needs, languages=langs,
                   phones=phones, hours=hours, sites=sites, serves=serves, confidential_address=hides,
                   source={"format": "fhir"})  # shared (Compactor); the id names the resource


def _provider(c: Collector, w: str, provided: Any,
              orgs: dict[str, tuple[str, dict[str, Any]]]) -> tuple[str | None, MatchRules]:
    """The providing organization's name and the rules that recognise it (id, identifiers, name)."""
    org_name = None
    serves = MatchRules()
    if provided is None:
        return org_name, serves
    found = _lookup(orgs, provided, "Organization")
    if found is None:
        if isinstance(provided, dict) and isinstance(provided.get("display"), str):
            org_name = provided["display"]
        else:
            c.add(f"{w}.providedBy", "reference to an Organization not in the bundle")
    else:
        org = found[1]
        org_name = org.get("name") if isinstance(org.get("name"), str) else None
        if org.get("id"):
            serves.organizations.add(f"Organization/{org['id']}")
        for ident in _seq(org.get("identifier")):
            if isinstance(ident, dict) and ident.get("system") and ident.get("value"):
                serves.organizations.add(f"{ident['system']}|{ident['value']}")
    if org_name:
        serves.organizations.add(norm_name(org_name))
    return org_name, serves


def _languages(c: Collector, w: str, communication: Any) -> set[str]:
    langs: set[str] = set()
    for k, cc in enumerate(_items(c, f"{w}.communication", communication)):
        code = None
        for word in _codings_words(cc):
            code = code or language_code(word)
        if code is None:
            c.add(f"{w}.communication[{k}]", "not a language")
        else:
            langs.add(code)
    return langs


def _phones(c: Collector, w: str, telecom: Any, hours: Any) -> list[Phone]:
    phones: list[Phone] = []
    if not isinstance(telecom or [], list):
        c.add(f"{w}.telecom", "must be a list")
        return phones
    for k, t in enumerate(telecom or []):
        tw = f"{w}.telecom[{k}]"
        if not isinstance(t, dict):
            c.add(tw, "must be an object")
            continue
        system = t.get("system", "phone")
        if isinstance(system, str) and system in TELECOM_CHANNELS:  # a mutated file may give any JSON here
            number = check_phone(c, f"{tw}.value", t.get("value"))
            if number:
                phones.append(Phone(number=number, channel=TELECOM_CHANNELS[system], hours=hours,
                                    after_hours=system == "pager"))
        elif system not in IGNORED_TELECOM:
            c.add(f"{tw}.system", f"unknown telecom system {system!r}")
    return phones


def _sites(c: Collector, w: str, refs: Any, locs: dict[str, tuple[str, dict[str, Any]]], hides: bool) -> list[Site]:
    sites: list[Site] = []
    for k, ref in enumerate(_items(c, f"{w}.location", refs)):
        found = _lookup(locs, ref, "Location")
        if found is None:
            c.add(f"{w}.location[{k}]", "reference to a Location not in the bundle")
            continue
        site = parse_site(c, found[0], found[1], hides)
        if site:
            sites.append(site)
    return sites
