"""What a granted SMART scope string allows, for both spellings.

SMART App Launch 2.x (v2) spells permissions as letters ``c r u d s`` (``patient/DocumentReference.cs``);
SMART 1.0 (v1) as ``read`` / ``write`` / ``*``. Both may appear in one token (servers that support v2 may
still return v1 scopes). Source: SMART App Launch 2.2.0, "Scopes for requesting clinical data"
(https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html), including the v1 -> v2 table
(``read`` = ``rs``, ``write`` = ``cud``).

Granular v2 scopes with a query (``patient/Observation.rs?category=...``) narrow the permission to a
subset of resources; for a create we cannot tell whether our resource falls in that subset, so such a
scope is not counted as granting a create (the safe reading). For reads and searches it is not counted
either: the app only reads back what it wrote.
"""

from __future__ import annotations

from collections.abc import Iterable

V1 = {"read": set("rs"), "write": set("cud"), "*": set("cruds")}
CONTEXTS = ("patient", "user", "system")


def permissions(scopes: str | Iterable[str], resource_type: str,
                contexts: Iterable[str] = CONTEXTS) -> set[str]:
    """The set of letters (c, r, u, d, s) granted on ``resource_type`` by ``scopes`` in ``contexts``."""
    tokens = scopes.split() if isinstance(scopes, str) else list(scopes)
    allowed_contexts = set(contexts)
    out: set[str] = set()
    for token in tokens:
        if "/" not in token or "." not in token:
            continue
        context, rest = token.split("/", 1)
        if context not in allowed_contexts:
            continue
        rtype, perm = rest.split(".", 1)
        if rtype not in (resource_type, "*"):
            continue
        if "?" in perm:
            continue  # granular (query-limited): not enough to know our resource is covered
        if perm in V1:
            out |= V1[perm]
        elif perm and set(perm) <= set("cruds"):
            out |= set(perm)
    return out


def allows(scopes: str | Iterable[str], resource_type: str, letter: str,
           contexts: Iterable[str] = CONTEXTS) -> bool:
    """Whether ``scopes`` grant ``letter`` (c, r, u, d or s) on ``resource_type``."""
    return letter in permissions(scopes, resource_type, contexts)


def spell(context: str, resource_type: str, letters: str, version: str) -> str:
    """One scope in the EHR's spelling: v2 ``patient/X.cs``, v1 ``patient/X.write`` / ``.read``."""
    if version == "v1":
        if set(letters) <= set("rs"):
            return f"{context}/{resource_type}.read"
        return f"{context}/{resource_type}.write"
    order = "cruds"
    return f"{context}/{resource_type}." + "".join(c for c in order if c in letters)
