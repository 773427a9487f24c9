"""The launch context as typed data: what the app knows about the patient, the visit, its site and the user,
read once at launch (``fhir.context.read_launch_context``) and kept, encrypted, with the launch record.

Every part is a frozen dataclass, so a layer reads ``context.patient.language`` and cannot change what the
launch read. ``LaunchContext.to_dict`` and ``LaunchContext.from_dict`` are the stored JSON shape, unchanged
from the untyped dict the reader returned before, so every stored launch record still loads::

    {"patient": {"id", "name", "birthDate", "gender", "language", "languages", "mrn", "interpreter_needed"} | None,
     "encounter": {"id", "class", "start", "interpreter_needed",
                   "locations": [{"id", "name", "identifiers": [{"system", "value"}], "postalCode"}],
                   "service_provider": {"id", "name", "identifiers"} | None} | None,
     "user": {"reference", "name", "roles", "app_roles"?,
              "practitioner_roles": [{"id", "active", "codings", "texts", "locations", "organizations", "services",
                                      "app_roles"?}]},
     "need_patient_banner", "smart_style_url", "intent", "fhir_context": [...], "scope", "smart_style"?}

A key an older record lacks takes its default. ``practitioner_roles`` absent (records from before the reader
kept them) stays ``None``, not empty: the role mapping then keeps the ``roles`` the launch gave. ``app_roles``
is what the app's deployment role mapping made of the user and of each role at the callback (absent: not mapped).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# -- reading the stored JSON leniently: a record written by any earlier version must load ---------------------


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _text(value: Any) -> str | None:
    """A string as stored; a number (an EHR's code sent as one) as its text; anything else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _texts(value: Any) -> tuple[str, ...]:
    return tuple(t for t in (_text(v) for v in value) if t is not None) if isinstance(value, list) else ()


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


@dataclass(frozen=True, slots=True)
class Identifier:
    system: str | None
    value: str

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Identifier:
        return cls(system=_text(raw.get("system")), value=_text(raw.get("value")) or "")

    def to_dict(self) -> dict[str, Any]:
        return {"system": self.system, "value": self.value}


def _identifiers(value: Any) -> tuple[Identifier, ...]:
    return tuple(Identifier.from_dict(i) for i in _dicts(value))


@dataclass(frozen=True, slots=True)
class LocationSummary:
    """A Location the encounter names: the site the ranking and the queue's coverage match on."""

    id: str | None = None
    name: str | None = None
    identifiers: tuple[Identifier, ...] = ()
    postal_code: str | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LocationSummary:
        return cls(id=_text(raw.get("id")), name=_text(raw.get("name")),
                   identifiers=_identifiers(raw.get("identifiers")), postal_code=_text(raw.get("postalCode")))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "identifiers": [i.to_dict() for i in self.identifiers],
                "postalCode": self.postal_code}


@dataclass(frozen=True, slots=True)
class OrganizationSummary:
    """The encounter's serviceProvider."""

    id: str | None = None
    name: str | None = None
    identifiers: tuple[Identifier, ...] = ()

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> OrganizationSummary:
        return cls(id=_text(raw.get("id")), name=_text(raw.get("name")),
                   identifiers=_identifiers(raw.get("identifiers")))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "identifiers": [i.to_dict() for i in self.identifiers]}


@dataclass(frozen=True, slots=True)
class PatientSummary:
    id: str | None = None
    name: str = ""
    birth_date: str | None = None
    gender: str | None = None
    language: str = "en"  # the preferred one of ``languages``
    languages: tuple[str, ...] = ("en",)
    mrn: str | None = None
    interpreter_needed: bool | None = None  # US Core interpreter-needed; None when the EHR does not say

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PatientSummary:
        return cls(id=_text(raw.get("id")), name=_text(raw.get("name")) or "", birth_date=_text(raw.get("birthDate")),
                   gender=_text(raw.get("gender")), language=_text(raw.get("language")) or "en",
                   languages=_texts(raw.get("languages")) or ("en",), mrn=_text(raw.get("mrn")),
                   interpreter_needed=_flag(raw.get("interpreter_needed")))

    def to_dict(self) -> dict[str, Any]:
        return {"interpreter_needed": self.interpreter_needed, "id": self.id, "name": self.name,
                "birthDate": self.birth_date, "gender": self.gender, "language": self.language,
                "languages": list(self.languages), "mrn": self.mrn}


@dataclass(frozen=True, slots=True)
class EncounterSummary:
    id: str | None = None
    class_code: str | None = None  # Encounter.class code (AMB, EMER, IMP, ...)
    start: str | None = None
    interpreter_needed: bool | None = None
    locations: tuple[LocationSummary, ...] = ()
    service_provider: OrganizationSummary | None = None
    # What the site is part of: Location.partOf and Organization.partOf, walked up a few levels (a department's
    # hospital), nearest first. Coverage and routing match these as well as the site itself.
    parent_locations: tuple[LocationSummary, ...] = ()
    parent_organizations: tuple[OrganizationSummary, ...] = ()

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> EncounterSummary:
        provider = raw.get("service_provider")
        return cls(id=_text(raw.get("id")), class_code=_text(raw.get("class")), start=_text(raw.get("start")),
                   interpreter_needed=_flag(raw.get("interpreter_needed")),
                   locations=tuple(LocationSummary.from_dict(loc) for loc in _dicts(raw.get("locations"))),
                   service_provider=OrganizationSummary.from_dict(provider) if isinstance(provider, dict) else None,
                   parent_locations=tuple(LocationSummary.from_dict(x) for x in _dicts(raw.get("parent_locations"))),
                   parent_organizations=tuple(OrganizationSummary.from_dict(x)
                                              for x in _dicts(raw.get("parent_organizations"))))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "class": self.class_code, "start": self.start,
                "interpreter_needed": self.interpreter_needed, "locations": [loc.to_dict() for loc in self.locations],
                "service_provider": self.service_provider.to_dict() if self.service_provider else None,
                "parent_locations": [x.to_dict() for x in self.parent_locations],
                "parent_organizations": [x.to_dict() for x in self.parent_organizations]}


@dataclass(frozen=True, slots=True)
class Coding:
    system: str | None = None
    code: str | None = None
    display: str | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Coding:
        return cls(system=_text(raw.get("system")), code=_text(raw.get("code")), display=_text(raw.get("display")))

    def to_dict(self) -> dict[str, Any]:
        return {"system": self.system, "code": self.code, "display": self.display}


@dataclass(frozen=True, slots=True)
class Reference:
    """A reference on the launch's FHIR server (``Type/id``), with its display when the EHR gave one."""

    reference: str
    display: str | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Reference:
        return cls(reference=_text(raw.get("reference")) or "", display=_text(raw.get("display")))

    def to_dict(self) -> dict[str, Any]:
        return {"reference": self.reference, "display": self.display}


def _references(value: Any) -> tuple[Reference, ...]:
    return tuple(Reference.from_dict(r) for r in _dicts(value))


@dataclass(frozen=True, slots=True)
class RoleSummary:
    """One PractitionerRole of the signed-in user: its codes and texts (the deployment's role mapping reads
    them) and the places it covers (the social-work queue's scope), its HealthcareServices' places included."""

    id: str | None = None
    active: bool = True
    codings: tuple[Coding, ...] = ()
    texts: tuple[str, ...] = ()
    locations: tuple[Reference, ...] = ()
    organizations: tuple[Reference, ...] = ()
    services: tuple[Reference, ...] = ()
    app_roles: tuple[str, ...] | None = None  # what the deployment's role mapping made of this role

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RoleSummary:
        return cls(id=_text(raw.get("id")), active=raw.get("active", True) is not False,
                   codings=tuple(Coding.from_dict(c) for c in _dicts(raw.get("codings"))),
                   texts=_texts(raw.get("texts")), locations=_references(raw.get("locations")),
                   organizations=_references(raw.get("organizations")), services=_references(raw.get("services")),
                   app_roles=_texts(raw["app_roles"]) if isinstance(raw.get("app_roles"), list) else None)

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "active": self.active, "codings": [c.to_dict() for c in self.codings],
               "texts": list(self.texts), "locations": [r.to_dict() for r in self.locations],
               "organizations": [r.to_dict() for r in self.organizations],
               "services": [r.to_dict() for r in self.services]}
        if self.app_roles is not None:
            out["app_roles"] = list(self.app_roles)
        return out


@dataclass(frozen=True, slots=True)
class UserSummary:
    """The signed-in user (``fhirUser``): the Practitioner's reference and name, the app roles the launch
    recognised (``clinician`` / ``social_worker``) and the PractitionerRoles they came from."""

    reference: str | None = None
    name: str | None = None
    roles: tuple[str, ...] = ()
    practitioner_roles: tuple[RoleSummary, ...] | None = None  # None: a record from before roles were kept
    app_roles: tuple[str, ...] | None = None  # the app roles the deployment's mapping gave at the callback

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> UserSummary:
        roles = raw.get("practitioner_roles")
        return cls(reference=_text(raw.get("reference")), name=_text(raw.get("name")), roles=_texts(raw.get("roles")),
                   practitioner_roles=tuple(RoleSummary.from_dict(r) for r in _dicts(roles))
                   if isinstance(roles, list) else None,
                   app_roles=_texts(raw["app_roles"]) if isinstance(raw.get("app_roles"), list) else None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reference": self.reference, "name": self.name, "roles": list(self.roles)}
        if self.practitioner_roles is not None:
            out["practitioner_roles"] = [r.to_dict() for r in self.practitioner_roles]
        if self.app_roles is not None:
            out["app_roles"] = list(self.app_roles)
        return out


@dataclass(frozen=True, slots=True)
class LaunchContext:
    patient: PatientSummary | None = None
    encounter: EncounterSummary | None = None
    user: UserSummary = UserSummary()
    need_patient_banner: bool = True
    smart_style_url: str | None = None
    intent: str | None = None
    fhir_context: tuple[dict[str, Any], ...] = ()  # SMART fhirContext items as the token response gave them
    scope: str = ""  # the scope the EHR granted
    smart_style: dict[str, str] | None = None  # the sanitised style document, once the app has read it

    # -- what layers ask most -------------------------------------------------------------------------------
    @property
    def patient_id(self) -> str | None:
        return self.patient.id if self.patient else None

    @property
    def encounter_id(self) -> str | None:
        return self.encounter.id if self.encounter else None

    @property
    def locations(self) -> tuple[LocationSummary, ...]:
        """The encounter's Locations (none without an encounter)."""
        return self.encounter.locations if self.encounter else ()

    @property
    def organization(self) -> OrganizationSummary | None:
        """The encounter's serviceProvider."""
        return self.encounter.service_provider if self.encounter else None

    def with_style(self, style: dict[str, str]) -> LaunchContext:
        return dataclasses.replace(self, smart_style=dict(style))

    # -- the stored JSON ------------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> LaunchContext:
        raw = _dict(raw)
        patient, encounter, style = raw.get("patient"), raw.get("encounter"), raw.get("smart_style")
        return cls(
            patient=PatientSummary.from_dict(patient) if isinstance(patient, dict) else None,
            encounter=EncounterSummary.from_dict(encounter) if isinstance(encounter, dict) else None,
            user=UserSummary.from_dict(_dict(raw.get("user"))),
            need_patient_banner=bool(raw.get("need_patient_banner", True)),
            smart_style_url=_text(raw.get("smart_style_url")),
            intent=_text(raw.get("intent")),
            fhir_context=tuple(dict(c) for c in _dicts(raw.get("fhir_context"))),
            scope=_text(raw.get("scope")) or "",
            smart_style={str(k): str(v) for k, v in style.items()} if isinstance(style, dict) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "patient": self.patient.to_dict() if self.patient else None,
            "encounter": self.encounter.to_dict() if self.encounter else None,
            "user": self.user.to_dict(),
            "need_patient_banner": self.need_patient_banner,
            "smart_style_url": self.smart_style_url,
            "intent": self.intent,
            "fhir_context": [dict(c) for c in self.fhir_context],
            "scope": self.scope,
        }
        if self.smart_style is not None:
            out["smart_style"] = dict(self.smart_style)
        return out
