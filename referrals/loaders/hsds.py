"""Open Referral HSDS 3.0: JSON (a list of services as the HSDS API returns them, a paged API response
``{"contents": [...]}`` or ``{"services": [...]}``) and the tabular datapackage (datapackage.json + CSVs).

Services carry their organization, phones, schedules, languages, attributes (taxonomy terms) and
service_at_locations -> location (addresses, latitude/longitude). The CSV tables are joined into the
same nested shape first; every object remembers its file and row so errors point at the CSV row.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from referrals.errors import Collector, DirectoryError, Issue
from referrals.loaders.common import (
    always_hours,
    check_coord,
    check_id,
    check_phone,
    finish,
    json_array_items,
    language_code,
    needs_from_words,
    needs_in_text,
    place_sites,
    read_json,
    read_text,
    safe_url,
    weekly_interval,
)
from referrals.model import Address, Compactor, Directory, Hours, MatchRules, Phone, Service, Site, norm_name

WHERE = "_where"  # set on objects built from CSV rows: "services.csv row 4"
PHONE_TYPES = {"voice": "voice", "cell": "voice", "text": "text", "textphone": "tty", "pager": "pager",
               "video": "voice", "fax": None}
SHELTER_WORDS = ("shelter", "safe home", "safe house")
_Tables = dict[str, list[dict[str, Any]]]


def _w(obj: Any, path: str) -> str:
    return obj.get(WHERE, path) if isinstance(obj, dict) else path


def _field(obj: dict[str, Any], key: str, where: str) -> str:
    return f"{where}, column {key}" if WHERE in obj else f"{where}.{key}"


def _str(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _list(c: Collector, obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        c.add(_field(obj, key, where), "must be a list")
        return []
    return value


# -- schedules -------------------------------------------------------------------------------------------
def parse_schedules(c: Collector, items: list[Any], where: str) -> Hours:
    if not items:
        return Hours.unknown()
    intervals = []
    always = False
    for k, sch in enumerate(items):
        w = _w(sch, f"{where}[{k}]")
        if not isinstance(sch, dict):
            c.add(w, "schedule must be an object")
            continue
        desc = " ".join(str(sch.get(x) or "") for x in ("description", "notes", "schedule_link")).lower()
        if "24/7" in desc or "24 hours" in desc:
            always = True
            continue
        freq = (sch.get("freq") or "WEEKLY")
        if not isinstance(freq, str) or freq.upper() != "WEEKLY":
            c.add(_field(sch, "freq", w), f"only WEEKLY schedules are supported, got {freq!r}")
            continue
        iv = weekly_interval(c, w, sch.get("byday"), sch.get("opens_at"), sch.get("closes_at"))
        if iv is None:
            continue
        if always_hours(iv.opens, iv.closes, iv.days):
            always = True
        intervals.append(iv)
    if always:
        return Hours(always=True)
    return Hours(weekly=intervals) if intervals else Hours.unknown()


# -- parts --------------------------------------------------------------------------------------------------
def parse_phone(c: Collector, ph: Any, where: str) -> Phone | None:
    w = _w(ph, where)
    if not isinstance(ph, dict):
        c.add(w, "phone must be an object")
        return None
    kind = (ph.get("type") or "voice")
    channel = PHONE_TYPES.get(str(kind).lower(), "voice") if isinstance(kind, str) else "voice"
    if channel is None:  # fax: not a way for a patient to reach anyone
        return None
    number = check_phone(c, _field(ph, "number", w), ph.get("number"))
    if number is None:
        return None
    ext = ph.get("extension")
    if ext not in (None, "") and not str(ext).strip().isdigit():
        c.add(_field(ph, "extension", w), "extension must be digits")
        ext = None
    desc = _str(ph.get("description")) or ""
    after = "after hours" in desc.lower() or "after-hours" in desc.lower() or channel == "pager"
    return Phone(number=number, channel=channel, ext=str(ext).strip() if ext not in (None, "") else None,
                 label={"en": desc} if desc else {},
                 hours=parse_schedules(c, _list(c, ph, "schedules", w), f"{w}.schedules"), after_hours=after)


def parse_location(c: Collector, sal: Any, where: str, service_hides: bool) -> Site | None:
    w = _w(sal, where)
    if not isinstance(sal, dict):
        c.add(w, "service_at_location must be an object")
        return None
    loc = sal.get("location") if isinstance(sal.get("location"), dict) else sal
    lw = _w(loc, f"{w}.location")
    sid = check_id(c, _field(loc, "id", lw), loc.get("id"))
    name = _str(loc.get("name"))
    if (loc.get("location_type") or "physical") == "virtual":
        return None
    lat, lon = _coordinates(c, loc, lw)
    address = _address(c, loc, lw, service_hides)
    hours = None
    schedules = _list(c, sal, "schedules", w) or (_list(c, loc, "schedules", lw) if loc is not sal else [])
    if schedules:
        hours = parse_schedules(c, schedules, f"{w}.schedules")
    if sid is None:
        return None
    return Site(id=sid, name={"en": name or sid}, address=address, lat=lat, lon=lon,
                coords_source="source" if lat is not None else None, match=_location_rules(loc, name), hours=hours)


def _coordinates(c: Collector, loc: dict[str, Any], lw: str) -> tuple[float | None, float | None]:
    lat = check_coord(c, _field(loc, "latitude", lw), loc.get("latitude"), 90)
    lon = check_coord(c, _field(loc, "longitude", lw), loc.get("longitude"), 180)
    if (lat is None) != (lon is None):
        c.add(lw, "give both latitude and longitude, or neither")
        return None, None
    return lat, lon


def _address(c: Collector, loc: dict[str, Any], lw: str, service_hides: bool) -> Address | None:
    """The location's physical address (the first one, or the last usable if none says physical); no street
    line where the service hides its address (a shelter)."""
    address = None
    for k, a in enumerate(_list(c, loc, "addresses", lw)):
        aw = _w(a, f"{lw}.addresses[{k}]")
        if not isinstance(a, dict):
            c.add(aw, "address must be an object")
            continue
        if (a.get("address_type") or "physical") != "physical" and address is not None:
            continue
        bad = [x for x in ("address_1", "city", "state_province", "postal_code")
               if a.get(x) is not None and not isinstance(a.get(x), str)]
        for x in bad:
            c.add(_field(a, x, aw), "must be a string")
        if bad:
            continue
        address = Address(line=None if service_hides else _str(a.get("address_1")), city=_str(a.get("city")),
                          state=_str(a.get("state_province")), postal_code=_str(a.get("postal_code")))
    return address


def _location_rules(loc: dict[str, Any], name: str | None) -> MatchRules:
    """How an EHR's encounter site is recognised as this location: its name, its external identifier."""
    rules = MatchRules()
    if name:
        rules.names.add(norm_name(name))
    ext_id, ext_type = _str(loc.get("external_identifier")), _str(loc.get("external_identifier_type"))
    if ext_id:
        rules.identifiers.add(f"{ext_type}|{ext_id}" if ext_type else f"Location/{ext_id}")
    return rules


INACTIVE_STATUSES = ("inactive", "defunct", "temporarily closed")
KNOWN_STATUSES = (None, "", "active", *INACTIVE_STATUSES)


def parse_service(c: Collector, svc: Any, where: str) -> Service | None:
    w = _w(svc, where)
    if not isinstance(svc, dict):
        c.add(w, "service must be an object")
        return None
    sid = check_id(c, _field(svc, "id", w), svc.get("id"))
    name = _str(svc.get("name"))
    if name is None:
        c.add(_field(svc, "name", w), "required")
    status = svc.get("status", "active")
    if status not in KNOWN_STATUSES:
        c.add(_field(svc, "status", w), f"unknown status {status!r}")
    org = svc.get("organization") if isinstance(svc.get("organization"), dict) else {}
    org_name = _str(org.get("name"))
    needs = _service_needs(c, svc, w, name)
    hides = "shelter" in needs or any(x in (name or "").lower() for x in SHELTER_WORDS)
    langs = _service_languages(c, svc, w)
    phones = [p for k, x in enumerate(_list(c, svc, "phones", w)) if (p := parse_phone(c, x, f"{w}.phones[{k}]"))]
    sites = [s for k, x in enumerate(_list(c, svc, "service_at_locations", w))
             if (s := parse_location(c, x, f"{w}.service_at_locations[{k}]", hides))]
    phones = phones or _organization_phones(c, org, w)  # HSDS often keeps the phone on the organization
    serves = MatchRules()
    if org_name:
        serves.organizations.add(norm_name(org_name))
    if sid is None or name is None:
        return None
    if status in INACTIVE_STATUSES:
        return None  # valid, but nothing a patient could call today
    for site in sites:  # one location may host several services: site ids are per service
        site.id = f"{sid}:{site.id}"
    desc = _str(svc.get("description"))
    return Service(
        id=sid, program=org_name or name, name={"en": name}, kind="hotline" if "crisis" in needs and not sites
        else "program", scope=_service_scope(svc.get("service_areas")), description={"en": desc} if desc else {},
        needs=needs, languages=langs, interpreters="interpret" in (desc or "").lower(), phones=phones,
        hours=parse_schedules(c, _list(c, svc, "schedules", w), _field(svc, "schedules", w)), sites=sites,
        serves=serves, confidential_address=hides, url=safe_url(_str(svc.get("url"))),
        source={"format": "hsds-3.0"},  # one shared dict (Compactor); the id names the record in the file
    )


def _service_needs(c: Collector, svc: dict[str, Any], w: str, name: str | None) -> set[str]:
    """What the service offers, from its name and taxonomy attributes (else its description)."""
    words: list[str | None] = []
    for k, attr in enumerate(_list(c, svc, "attributes", w)):
        if not isinstance(attr, dict):
            c.add(_w(attr, f"{w}.attributes[{k}]"), "attribute must be an object")
            continue
        term = attr.get("taxonomy_term") if isinstance(attr.get("taxonomy_term"), dict) else {}
        words += [_str(term.get("code")), _str(term.get("name")), _str(attr.get("value"))]
    needs = needs_in_text(name, _str(svc.get("alternate_name"))) | needs_from_words(*words)
    if not needs:  # a directory entry with no recognised offer still counts as advocacy
        needs = needs_in_text(_str(svc.get("description"))) or {"advocacy"}
    return needs


def _service_languages(c: Collector, svc: dict[str, Any], w: str) -> set[str]:
    langs: set[str] = set()
    for k, lang in enumerate(_list(c, svc, "languages", w)):
        lw = _w(lang, f"{w}.languages[{k}]")
        raw = (lang.get("code") or lang.get("name")) if isinstance(lang, dict) else lang
        code = language_code(raw)
        if code is None:
            c.add(lw, f"not a language: {raw!r}")
        else:
            langs.add(code)
    return langs


def _organization_phones(c: Collector, org: dict[str, Any], w: str) -> list[Phone]:
    ow = _w(org, f"{w}.organization")
    return [p for k, x in enumerate(_list(c, org, "phones", ow)) if (p := parse_phone(c, x, ow + f".phones[{k}]"))]


def _service_scope(areas: Any) -> str:
    """national / statewide / local, from HSDS service_areas."""
    if not isinstance(areas, list):
        return "local"
    named = [str(a.get("name", "")).lower() for a in areas if isinstance(a, dict)]
    if any(isinstance(a, dict) and a.get("extent_type") == "national" for a in areas) or any(
            n in ("united states", "national") for n in named):
        return "national"
    if any(n in ("massachusetts", "statewide") for n in named):
        return "statewide"
    return "local"


def parse_hsds(items: Iterable[Any], file: str, timezone: str, where: str = "", c: Collector | None = None,
               streamed: bool = False) -> Directory:
    """``streamed``: the items are decoded one at a time (``json_array_items``), so the strings a service keeps
    pin nothing of a freed parse tree and need no copying."""
    c = c or Collector(file)
    compactor = Compactor(copy=not streamed)
    services = []
    count = 0
    for i, x in enumerate(items):
        count += 1
        s = parse_service(c, x, f"{where}[{i}]")
        if s is not None:
            # Placed and compacted at once: what the compaction replaces is freed while the next item reuses it.
            place_sites(s)
            compactor.service(s)
            services.append(s)
    if not count:
        c.add(where or "$", "no services")
    return finish(c, services, timezone, {"file": file, "format": "hsds"}, compacted=True)


# -- JSON ---------------------------------------------------------------------------------------------------
def load_hsds_json(path: Path, timezone: str = "America/New_York") -> Directory:
    text = read_text(path)
    items = json_array_items(path, text)
    if items is not None:  # a list of services: decoded one service at a time
        return parse_hsds(items, str(path), timezone, "$", streamed=True)
    data = read_json(path, text)
    del text
    return parse_hsds_data(data, str(path), timezone)


def parse_hsds_data(data: Any, file: str, timezone: str = "America/New_York") -> Directory:
    if isinstance(data, list):
        return parse_hsds(data, file, timezone, "$")
    if isinstance(data, dict):
        for key in ("contents", "services"):
            if isinstance(data.get(key), list):
                return parse_hsds(data[key], file, timezone, f"$.{key}")
        if "id" in data and "name" in data:  # one service
            return parse_hsds([data], file, timezone, "$")
    raise DirectoryError([Issue(file, "$", "expected a list of HSDS services, {\"contents\": [...]} "
                                           "or {\"services\": [...]}")])


# -- CSV datapackage --------------------------------------------------------------------------------------
CHILD_TABLES = {  # table -> (parent key column, parent table, list key on the parent)
    "phones": [("service_id", "services", "phones"), ("location_id", "locations", "phones"),
               ("organization_id", "organizations", "phones")],
    "schedules": [("service_id", "services", "schedules"), ("service_at_location_id", "service_at_locations",
                                                             "schedules"), ("location_id", "locations", "schedules")],
    "languages": [("service_id", "services", "languages")],
    "addresses": [("location_id", "locations", "addresses")],
    "service_areas": [("service_id", "services", "service_areas")],
    "attributes": [("link_id", "*", "attributes")],
}


def read_table(c: Collector, base: Path, resource: dict[str, Any], k: int) -> tuple[str, list[dict[str, Any]]]:
    name = resource.get("name")
    rel = resource.get("path")
    if not isinstance(name, str) or not isinstance(rel, str):
        c.add(f"resources[{k}]", "each resource needs a name and a path")
        return "", []
    target = (base / rel).resolve()
    if base.resolve() not in target.parents:
        c.add(f"resources[{k}].path", "path must stay inside the datapackage folder")
        return name, []
    if not target.is_file():
        c.add(f"resources[{k}].path", f"file not found: {rel}")
        return name, []
    rows: list[dict[str, Any]] = []
    try:
        with target.open(encoding="utf-8-sig", newline="") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "id" not in reader.fieldnames and name not in ("attributes",):
                c.add(f"{rel}", "header row must include an id column")
                return name, []
            for n, row in enumerate(reader, start=2):  # row 1 is the header
                if None in row:
                    c.add(f"{rel} row {n}", "more cells than header columns")
                    continue
                clean: dict[str, Any] = {k2: (v if v != "" else None) for k2, v in row.items()}
                clean[WHERE] = f"{rel} row {n}"
                rows.append(clean)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        c.add(rel, f"cannot read CSV: {exc.__class__.__name__}: {exc}")
    return name, rows


def load_hsds_datapackage(path: Path, timezone: str = "America/New_York") -> Directory:
    base = path if path.is_dir() else path.parent
    pkg_file = base / "datapackage.json"
    c = Collector(str(pkg_file))
    pkg = read_json(pkg_file)
    resources = pkg.get("resources") if isinstance(pkg, dict) else None
    if not isinstance(resources, list) or not resources:
        raise DirectoryError([Issue(str(pkg_file), "resources", "must be a non-empty list")])
    tables: _Tables = {}
    for k, res in enumerate(resources):
        if not isinstance(res, dict):
            c.add(f"resources[{k}]", "must be an object")
            continue
        name, rows = read_table(c, base, res, k)
        if name:
            tables[name] = rows
    if "services" not in tables:
        c.add("resources", "a services table is required")
    c.raise_if_any()
    return parse_hsds(join_tables(c, tables), str(pkg_file), timezone, "services", c)


def join_tables(c: Collector, t: _Tables) -> list[dict[str, Any]]:
    """Nest the flat HSDS tables into service objects (as the HSDS API returns them)."""
    by_id = {name: {r["id"]: r for r in rows if r.get("id")} for name, rows in t.items()}
    _check_duplicate_ids(c, t)
    terms = by_id.get("taxonomy_terms", {})
    for table, links in CHILD_TABLES.items():
        for r in t.get(table, []):
            if not _place_child(c, r, table, links, by_id, terms) and table != "attributes":
                c.add(r[WHERE], f"row is not linked to any {' / '.join(p for _, p, _ in links)}")
    _place_service_locations(c, t, by_id)
    orgs = by_id.get("organizations", {})
    out = []
    for svc in t.get("services", []):
        org_id = svc.get("organization_id")
        if org_id:
            if org_id not in orgs:
                c.add(f"{svc[WHERE]}, column organization_id", f"no organization with id {org_id!r}")
            else:
                svc["organization"] = orgs[org_id]
        out.append(svc)
    return out


def _check_duplicate_ids(c: Collector, t: _Tables) -> None:
    for name, rows in t.items():
        seen: set[str] = set()
        for r in rows:
            if r.get("id") in seen:
                c.add(r[WHERE], f"duplicate id {r['id']!r} in {name}")
            if r.get("id"):
                seen.add(r["id"])


def _place_child(c: Collector, r: dict[str, Any], table: str, links: Any, by_id: dict[str, dict[str, Any]],
                 terms: dict[str, Any]) -> bool:
    """Attach a child row (phone, schedule, language, attribute...) to the first parent its columns name.
    False when no link column is filled; True when placed or reported as dangling."""
    for col, parent_table, key in links:
        ref = r.get(col)
        if not ref:
            continue
        tables = [parent_table] if parent_table != "*" else ["services", "organizations", "locations"]
        parent = next((by_id.get(pt, {}).get(ref) for pt in tables if ref in by_id.get(pt, {})), None)
        if parent is None:
            c.add(f"{r[WHERE]}, column {col}", f"no {parent_table if parent_table != '*' else 'record'} "
                                               f"with id {ref!r}")
            return True
        if table == "attributes" and r.get("taxonomy_term_id"):
            term = terms.get(r["taxonomy_term_id"])
            if term is None:
                c.add(f"{r[WHERE]}, column taxonomy_term_id", f"no taxonomy term {r['taxonomy_term_id']!r}")
            else:
                r["taxonomy_term"] = term
        parent.setdefault(key, []).append(r)
        return True
    return False


def _place_service_locations(c: Collector, t: _Tables, by_id: dict[str, dict[str, Any]]) -> None:
    locs = by_id.get("locations", {})
    services = by_id.get("services", {})
    for sal in t.get("service_at_locations", []):
        svc = services.get(sal.get("service_id") or "")
        loc = locs.get(sal.get("location_id") or "")
        if svc is None:
            c.add(f"{sal[WHERE]}, column service_id", f"no service with id {sal.get('service_id')!r}")
            continue
        if loc is None:
            c.add(f"{sal[WHERE]}, column location_id", f"no location with id {sal.get('location_id')!r}")
            continue
        entry = dict(sal)
        entry["location"] = loc
        svc.setdefault("service_at_locations", []).append(entry)
