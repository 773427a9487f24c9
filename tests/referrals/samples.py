"""Small, valid directory sources in each supported format (built in code so tests can break them)."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


def hsds_services() -> list[dict[str, Any]]:
    """Two services as the HSDS 3.0 API returns them: a Chelsea counselling program and a shelter."""
    return [
        {
            "id": "svc-chelsea-counsel", "name": "Chelsea Family Counselling", "status": "active",
            "description": "Counseling and legal advocacy for survivors.",
            "organization": {"id": "org-cfc", "name": "Chelsea Family Center"},
            "languages": [{"id": "l1", "code": "es", "name": "Spanish"}, {"id": "l2", "code": "en"}],
            "phones": [{"id": "p1", "number": "617-555-0100", "type": "voice"},
                       {"id": "p2", "number": "617-555-0199", "type": "pager", "description": "After hours pager"}],
            "schedules": [{"id": "s1", "freq": "WEEKLY", "byday": "MO,TU,WE,TH,FR", "opens_at": "09:00",
                           "closes_at": "17:00"}],
            "attributes": [{"id": "a1", "taxonomy_term": {"id": "t1", "code": "counseling", "name": "Counseling"}},
                           {"id": "a2", "taxonomy_term": {"id": "t2", "code": "legal", "name": "Legal advocacy"}}],
            "service_at_locations": [{"id": "sal1", "location": {
                "id": "loc-cfc", "name": "Chelsea Family Center", "latitude": 42.3918, "longitude": -71.0328,
                "addresses": [{"id": "ad1", "address_1": "1 Broadway", "city": "Chelsea", "state_province": "MA",
                               "postal_code": "02150", "address_type": "physical"}]}}],
        },
        {
            "id": "svc-safe-house", "name": "North Shore Safe House", "status": "active",
            "organization": {"id": "org-nssh", "name": "North Shore Safe House"},
            "phones": [{"id": "p3", "number": "978-555-0123", "type": "voice"}],
            "schedules": [{"id": "s2", "description": "24/7"}],
            "attributes": [{"id": "a3", "taxonomy_term": {"id": "t3", "code": "shelter", "name": "Emergency shelter"}}],
            "service_at_locations": [{"id": "sal2", "location": {
                "id": "loc-nssh", "name": "Confidential", "latitude": 42.4668, "longitude": -70.9495,
                "addresses": [{"id": "ad2", "address_1": "99 Hidden Lane", "city": "Lynn", "state_province": "MA",
                               "postal_code": "01902"}]}}],
        },
    ]


def write_hsds_json(path: Path, services: Any = None) -> Path:
    path.write_text(json.dumps(services if services is not None else hsds_services()))
    return path


TABLES = {
    "organizations": [{"id": "org-cfc", "name": "Chelsea Family Center"}],
    "services": [{"id": "svc-chelsea-counsel", "organization_id": "org-cfc", "name": "Chelsea Family Counselling",
                  "status": "active", "description": "Counseling for survivors."}],
    "locations": [{"id": "loc-cfc", "name": "Chelsea Family Center", "latitude": "42.3918", "longitude": "-71.0328",
                   "location_type": "physical"}],
    "service_at_locations": [{"id": "sal1", "service_id": "svc-chelsea-counsel", "location_id": "loc-cfc"}],
    "addresses": [{"id": "ad1", "location_id": "loc-cfc", "address_1": "1 Broadway", "city": "Chelsea",
                   "state_province": "MA", "postal_code": "02150", "address_type": "physical"}],
    "phones": [{"id": "p1", "service_id": "svc-chelsea-counsel", "number": "617-555-0100", "type": "voice"}],
    "schedules": [{"id": "s1", "service_id": "svc-chelsea-counsel", "freq": "WEEKLY", "byday": "MO,TU,WE,TH,FR",
                   "opens_at": "09:00", "closes_at": "17:00"}],
    "languages": [{"id": "l1", "service_id": "svc-chelsea-counsel", "code": "es", "name": "Spanish"}],
    "taxonomy_terms": [{"id": "t1", "code": "counseling", "name": "Counseling"}],
    "attributes": [{"id": "a1", "link_id": "svc-chelsea-counsel", "link_type": "service",
                    "taxonomy_term_id": "t1"}],
}


def write_datapackage(folder: Path, tables: dict[str, list[dict[str, Any]]] | None = None) -> Path:
    tables = tables if tables is not None else TABLES
    folder.mkdir(parents=True, exist_ok=True)
    resources = []
    for name, rows in tables.items():
        cols = list(dict.fromkeys(k for r in rows for k in r)) or ["id"]
        with (folder / f"{name}.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            w.writerows(rows)
        resources.append({"name": name, "path": f"{name}.csv", "profile": "tabular-data-resource"})
    (folder / "datapackage.json").write_text(json.dumps({"name": "hsds-test", "profile": "tabular-data-package",
                                                         "resources": resources}))
    return folder / "datapackage.json"


def fhir_bundle() -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "collection", "entry": [
        {"fullUrl": "urn:uuid:org1", "resource": {"resourceType": "Organization", "id": "org-rev",
                                                  "name": "Revere Community Services",
                                                  "identifier": [{"system": "urn:test", "value": "rcs"}]}},
        {"resource": {"resourceType": "Location", "id": "loc-rev", "name": "Revere Community Services",
                      "identifier": [{"system": "urn:ipv-sandbox:site", "value": "rcs"}],
                      "address": {"line": ["10 Broadway"], "city": "Revere", "state": "MA", "postalCode": "02151"},
                      "position": {"latitude": 42.4084, "longitude": -71.0120}}},
        {"resource": {"resourceType": "HealthcareService", "id": "hs-rev", "active": True,
                      "name": "Revere Advocacy and Support Groups",
                      "providedBy": {"reference": "urn:uuid:org1"},
                      "location": [{"reference": "Location/loc-rev"}],
                      "category": [{"coding": [{"code": "advocacy", "display": "Advocacy"}]}],
                      "type": [{"text": "Support groups"}, {"text": "Legal advocacy (209A)"}],
                      "communication": [{"coding": [{"system": "urn:ietf:bcp:47", "code": "pt"}]}],
                      "telecom": [{"system": "phone", "value": "781-555-0142"}, {"system": "url",
                                                                                 "value": "https://example.org"}],
                      "availableTime": [{"daysOfWeek": ["mon", "tue", "wed", "thu"],
                                         "availableStartTime": "10:00:00", "availableEndTime": "18:00:00"}]}},
    ]}


def write_fhir(path: Path, bundle: Any = None) -> Path:
    path.write_text(json.dumps(bundle if bundle is not None else fhir_bundle()))
    return path
