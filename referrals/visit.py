"""Where the visit happens, as the launch names it: the encounter's Locations and its serviceProvider, each
with the keys the directory's match rules are written in. The ranking reads only this of the launch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from referrals.model import norm_name


@dataclass(frozen=True, slots=True)
class Place:
    """A Location or Organization the encounter points at."""

    id: str | None = None
    name: str | None = None
    identifiers: tuple[tuple[str, str], ...] = ()  # (system, value)
    postal_code: str | None = None  # a Location's address: a safe origin when the site is not in the directory

    @classmethod
    def from_summary(cls, ref: dict[str, Any]) -> Place:
        """From a Location or Organization summary of the launch context (an identifier needs both parts)."""
        idents = tuple((str(i["system"]), str(i["value"])) for i in ref.get("identifiers") or []
                       if i.get("system") and i.get("value"))
        return cls(id=ref.get("id") or None, name=ref.get("name") or None, identifiers=idents,
                   postal_code=ref.get("postalCode"))

    def keys(self, kind: str) -> list[str]:
        """Match keys, most specific first: "system|value", "Location/id", "name:<normalised name>"."""
        keys = [f"{system}|{value}" for system, value in self.identifiers]
        if self.id:
            keys.append(f"{kind}/{self.id}")
        if self.name:
            keys.append("name:" + norm_name(self.name))
        return keys


@dataclass(frozen=True, slots=True)
class Visit:
    locations: tuple[Place, ...] = ()
    organization: Place | None = None  # the encounter's serviceProvider

    @classmethod
    def from_context(cls, context: dict[str, Any] | None) -> Visit:
        """From the launch context (its "encounter" summary); an empty Visit when the launch has no encounter."""
        encounter = (context or {}).get("encounter") or {}
        org = encounter.get("service_provider")
        return cls(locations=tuple(Place.from_summary(loc) for loc in encounter.get("locations") or []),
                   organization=Place.from_summary(org) if org else None)

    @property
    def placed(self) -> bool:
        """Does the launch say where the visit is (a location or an organization)?"""
        return bool(self.locations) or self.organization is not None

    def location_keys(self) -> list[str]:
        return [key for loc in self.locations for key in loc.keys("Location")]

    def organization_keys(self) -> list[str]:
        return self.organization.keys("Organization") if self.organization else []
