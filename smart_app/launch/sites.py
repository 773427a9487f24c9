"""The encounter's site as the EHR named it, for everything routed or scoped by site: referrals (the social-work
queue's coverage and routing, smart_app/worklist/scope.py) and the follow-ups of positive self-screens
(smart_app/followup/items.py) share these keys, so one site's staff see both and another site's see neither."""

from __future__ import annotations

from typing import Any


def referral_site_keys(context: dict[str, Any], directory_site: str | None) -> list[str]:
    """Every key of the encounter's site and of what it is part of (Location.partOf, Organization.partOf, walked
    at launch by fhir/context.py), as the EHR gave them (smart_app/worklist/scope.py says how they are matched)."""
    encounter = (context or {}).get("encounter") or {}
    keys: list[str] = []
    for loc in [*(encounter.get("locations") or []), *(encounter.get("parent_locations") or [])]:
        if loc.get("id"):
            keys.append(f"Location/{loc['id']}")
        keys += [f"{i.get('system')}|{i['value']}" for i in loc.get("identifiers") or [] if i.get("value")]
    for org in [encounter.get("service_provider") or {}, *(encounter.get("parent_organizations") or [])]:
        if org.get("id"):
            keys.append(f"Organization/{org['id']}")
        keys += [f"{i.get('system')}|{i['value']}" for i in org.get("identifiers") or [] if i.get("value")]
    if directory_site:
        keys.append(directory_site)
    return list(dict.fromkeys(k for k in keys if len(k) <= 512))


def site_display_name(context: dict[str, Any]) -> str | None:
    encounter = (context or {}).get("encounter") or {}
    for loc in encounter.get("locations") or []:
        if loc.get("name"):
            return str(loc["name"])[:256]
    org = encounter.get("service_provider") or {}
    return str(org["name"])[:256] if org.get("name") else None
