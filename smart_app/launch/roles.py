"""Who is a social worker or a program manager: the deployment's role mapping over the user's PractitionerRoles.

EHRs code roles differently: SNOMED CT occupations, NUCC provider taxonomy, local code systems (Epic
user templates, Oracle Health positions), or only a text ("Medical social worker"). The deployment file
maps them (``roles:`` in config/deployments/*.yaml, documented in the README)::

    roles:
      social_worker:
        codes:
          - {system: http://snomed.info/sct, code: "106328005"}            # Social worker (occupation)
          - {system: http://nucc.org/provider-taxonomy, code_prefix: "1041"}  # Social Worker taxonomy group
          - {system: "urn:oid:1.2.840.114350.1.13.99.2.7.10.836982.1040", code: "SW"}  # a local Epic list
        texts: ["social work"]          # regular expressions, case-insensitive, matched anywhere
      program_manager:
        texts: ["program manager", "social work (supervisor|manager)"]

A code rule matches a Coding of PractitionerRole.code or .specialty (``code`` exact, or ``code_prefix``);
a text rule matches CodeableConcept.text or a Coding's display; a ``users`` rule names the user itself (its
fhirUser reference, ``Practitioner/abc``: for a manager the EHR gives no distinguishing role). Inactive roles
never count. Without a
``roles:`` block the defaults below apply (SNOMED 106328005, NUCC 1041*): what fhir/context.py always
recognised. Sources: SNOMED CT 106328005 |Social worker (occupation)|; NUCC Health Care Provider Taxonomy,
grouping "Behavioral Health & Social Service Providers", classification 1041C0700X "Social Worker, Clinical"
and its 1041* siblings (https://taxonomy.nucc.org/).

The mapping is applied in one place, once: ``apply_mapping`` at the launch's callback stores the user's app roles
(``user.app_roles``) and, on each PractitionerRole, the app roles it gave (``app_roles``: the social-work ones
are the queue's coverage). Every feature (the landing, the queue and its scope, the program report) reads them
with ``user_roles`` / ``queue_practitioner_roles`` and never maps again; a change of the mapping counts from the
next launch. A context stored without them (a launch from before, a test's hand-made context) is mapped by the
same function when read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

SOCIAL_WORKER = "social_worker"
PROGRAM_MANAGER = "program_manager"
QUEUE_ROLES = (SOCIAL_WORKER, PROGRAM_MANAGER)

DEFAULT_MAPPING: dict[str, Any] = {
    SOCIAL_WORKER: {"codes": [{"system": "http://snomed.info/sct", "code": "106328005"},
                              {"system": "http://nucc.org/provider-taxonomy", "code_prefix": "1041"}]},
}


class RoleMappingError(ValueError):
    """The deployment's ``roles:`` block is malformed (message names the rule)."""


@dataclass
class RoleRule:
    codes: list[dict[str, str]] = field(default_factory=list)
    texts: list[re.Pattern[str]] = field(default_factory=list)
    users: frozenset[str] = frozenset()

    def names(self, user: dict[str, Any]) -> bool:
        refs = {str(user.get(k)) for k in ("reference", "fhir_user") if user.get(k)}
        return any(r == u or r.endswith("/" + u) for r in refs for u in self.users)

    def matches(self, role: dict[str, Any]) -> bool:
        for c in role.get("codings") or []:
            for rule in self.codes:
                if rule.get("system") not in (None, c.get("system")):
                    continue
                code = str(c.get("code") or "")
                if ("code" in rule and code == str(rule["code"])) or \
                        ("code_prefix" in rule and code.startswith(str(rule["code_prefix"]))):
                    return True
        words = list(role.get("texts") or []) + [str(c.get("display")) for c in role.get("codings") or []
                                                  if c.get("display")]
        return any(p.search(w) for p in self.texts for w in words)


def load_mapping(raw: dict[str, Any] | None) -> dict[str, RoleRule]:
    """Parse a deployment's ``roles:`` block (None: the defaults)."""
    raw = DEFAULT_MAPPING if raw is None else raw
    if not isinstance(raw, dict):
        raise RoleMappingError("roles: must map role names to rules")
    out: dict[str, RoleRule] = {}
    for name, spec in raw.items():
        if name not in QUEUE_ROLES:
            raise RoleMappingError(f"roles: unknown role {name!r} (use {', '.join(QUEUE_ROLES)})")
        spec = spec or {}
        codes = []
        for i, c in enumerate(spec.get("codes") or []):
            if not isinstance(c, dict) or not ({"code", "code_prefix"} & set(c)):
                raise RoleMappingError(f"roles.{name}.codes[{i}]: needs code or code_prefix")
            codes.append({k: str(v) for k, v in c.items()})
        texts = []
        for i, t in enumerate(spec.get("texts") or []):
            try:
                texts.append(re.compile(str(t), re.IGNORECASE))
            except re.error as exc:
                raise RoleMappingError(f"roles.{name}.texts[{i}]: not a regular expression ({exc})") from None
        users = spec.get("users") or []
        if not isinstance(users, list) or not all(isinstance(u, str) and "/" in u for u in users):
            raise RoleMappingError(f"roles.{name}.users: a list of user references (Practitioner/<id>)")
        out[name] = RoleRule(codes, texts, frozenset(users))
    return out


# Parsed mappings kept beside the settings object they came from: settings never change once built (replacing them
# makes a new object, which parses again), and every launch's callback asked for the same rules. Bounded, as tests
# build many settings objects.
_PARSED: dict[int, tuple[Any, dict[str, RoleRule]]] = {}
_PARSED_ENTRIES = 16


def mapping_for(deployment: Any) -> dict[str, RoleRule]:
    """The deployment's ``roles:`` block (typed by the settings model) ready to match; unset: the defaults."""
    kept = _PARSED.get(id(deployment))
    if kept is not None and kept[0] is deployment:
        return kept[1]
    mapping = _parse_mapping(deployment)
    if len(_PARSED) >= _PARSED_ENTRIES:
        _PARSED.clear()
    _PARSED[id(deployment)] = (deployment, mapping)
    return mapping


def _parse_mapping(deployment: Any) -> dict[str, RoleRule]:
    rules = getattr(deployment, "roles", None)
    if rules is None:
        return load_mapping(None)
    return load_mapping({name: spec.model_dump(exclude_none=True) if hasattr(spec, "model_dump") else spec
                         for name, spec in rules.items()})


def matching_roles(role: dict[str, Any], mapping: dict[str, RoleRule]) -> list[str]:
    if not role.get("active", True):
        return []
    return [name for name, rule in mapping.items() if rule.matches(role)]


def _mapped(user: dict[str, Any], mapping: dict[str, RoleRule],
            given: list[list[str]] | None = None) -> list[str]:
    """The user's app roles: named by a ``users`` rule, or given by a PractitionerRole (``given``: what each of the
    user's roles gave, when the caller matched them already)."""
    out: list[str] = [name for name, rule in mapping.items() if rule.users and rule.names(user)]
    if given is None:
        given = [matching_roles(role, mapping) for role in user.get("practitioner_roles") or []]
    for names in given:
        for name in names:
            if name not in out:
                out.append(name)
    return [name for name in QUEUE_ROLES if name in out]


def apply_mapping(user: dict[str, Any], deployment: Any) -> dict[str, Any]:
    """The launch's user with its app roles, as the callback stores them (the one place the mapping is applied):
    ``app_roles`` on the user, and on each PractitionerRole the app roles that role gave."""
    mapping = mapping_for(deployment)
    given = [matching_roles(role, mapping) for role in user.get("practitioner_roles") or []]
    roles = [{**role, "app_roles": names} for role, names in zip(user.get("practitioner_roles") or [], given,
                                                                   strict=True)]
    mapped = {**user, "practitioner_roles": roles} if user.get("practitioner_roles") is not None else dict(user)
    mapped["app_roles"] = _mapped(user, mapping, given)
    return mapped


def user_roles(user: dict[str, Any], deployment: Any) -> list[str]:
    """The app roles (social_worker, program_manager) of the launch's user: those the callback stored. A context
    without them is mapped here; one without PractitionerRoles either (older launches, tests) keeps the roles
    fhir/context.py gave it."""
    if user.get("app_roles") is not None:
        return [r for r in user["app_roles"] if r in QUEUE_ROLES]
    if user.get("practitioner_roles") is None:
        return [r for r in user.get("roles") or [] if r in QUEUE_ROLES]
    return _mapped(user, mapping_for(deployment))


def queue_practitioner_roles(user: dict[str, Any], deployment: Any) -> list[dict[str, Any]]:
    """The user's PractitionerRoles that made them a social worker or program manager (their places are the
    queue's coverage): as the callback marked them, else mapped here."""
    mapping: dict[str, RoleRule] | None = None
    out = []
    for role in user.get("practitioner_roles") or []:
        if role.get("app_roles") is None:
            mapping = mapping if mapping is not None else mapping_for(deployment)
            given = matching_roles(role, mapping)
        else:
            given = role["app_roles"]
        if any(r in QUEUE_ROLES for r in given):
            out.append(role)
    return out
