"""Which EHR an ``iss`` belongs to: the deployment names each EHR once with the ``iss`` values that are it.

One EHR may answer on several ``iss`` values (an EHR launch and a standalone launch, a launcher that gives
each standalone launch its own ``iss``). The deployment file ties them together::

    ehrs:
      bwh:
        name: Brigham EHR
        iss: [https://ehr.example.org/fhir]             # exact values (a trailing slash is ignored)
        iss_patterns: ["https://launcher.example.org/l/*/fhir"]   # one ``*``: exactly one path segment

Pattern syntax: an absolute http(s) URL whose scheme, host and port are fixed (no ``*`` there: the app never
calls a host the deployment does not name), with exactly one ``*`` standing alone as one path segment. It
matches one segment of letters, digits and ``-._~`` (not starting with a dot: no ``..``, no ``%``, no ``/``).

Exact values are allow-listed by ``allowed_iss`` as ever; an ``iss`` matching a pattern is
allow-listed by the pattern (``launch_allowed``: such values cannot be listed one by one), and the patterns' fixed
origins join the outbound URL policy (``allowed_origins``). Without an ``ehrs`` block each allow-listed
``iss`` is its own EHR, named by itself (what the app always did). Worklist scope, routing, visit memory, report
events and the access audit key on the identity, never on the raw ``iss`` string.
"""

from __future__ import annotations

import re
import secrets
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

# One path segment a pattern's ``*`` stands for: URL-unreserved characters, not starting with a dot.
SEGMENT = r"[A-Za-z0-9_~-][A-Za-z0-9._~-]*"
WILDCARD = "*"


class EhrIdentityError(ValueError):
    """The deployment's ``ehrs`` block is malformed (the message names the entry)."""


@dataclass(frozen=True)
class IssPattern:
    text: str
    origin: str  # scheme://host[:port], fixed
    regex: re.Pattern[str]

    def matches(self, iss: str) -> bool:
        return self.regex.fullmatch(iss) is not None


@dataclass(frozen=True)
class Ehr:
    id: str
    name: str
    iss: frozenset[str]
    patterns: tuple[IssPattern, ...] = ()

    def owns(self, iss: str) -> bool:
        iss = normalise(iss)
        return iss in self.iss or any(p.matches(iss) for p in self.patterns)


def normalise(iss: str) -> str:
    return str(iss or "").strip().rstrip("/")


def parse_pattern(text: str, where: str = "iss_patterns") -> IssPattern:
    """One ``iss_patterns`` entry, checked: fixed scheme, host and port; one ``*`` as a whole path segment."""
    raw = normalise(text)
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise EhrIdentityError(f"{where}: {raw!r} is not an absolute http(s) URL")
    if WILDCARD in parts.netloc or WILDCARD in parts.scheme:
        raise EhrIdentityError(f"{where}: {raw!r} has a * in the host: the host must be fixed")
    if parts.query or parts.fragment or "?" in raw or "#" in raw:
        raise EhrIdentityError(f"{where}: {raw!r} may not have a query or fragment")
    segments = parts.path.split("/")
    if raw.count(WILDCARD) != 1 or segments.count(WILDCARD) != 1:
        raise EhrIdentityError(f"{where}: {raw!r} needs exactly one * standing alone as a path segment")
    origin = f"{parts.scheme}://{parts.netloc}"
    path = "/".join(SEGMENT if s == WILDCARD else re.escape(s) for s in segments)
    return IssPattern(text=raw, origin=origin, regex=re.compile(re.escape(origin) + path))


# What was read from one settings object, kept while it lives: settings never change once built (a test's
# replace_settings makes a new object), and pages asked for the EHR of their launch's iss several times each.
_READ: dict[tuple[int, str], tuple[weakref.ref, Any]] = {}


def _once(deployment: Any, what: str, read: Callable[[Any], Any]) -> Any:
    key = (id(deployment), what)
    hit = _READ.get(key)
    if hit is not None and hit[0]() is deployment:
        return hit[1]
    value = read(deployment)
    try:
        ref = weakref.ref(deployment, lambda _ref, key=key: _READ.pop(key, None))
    except TypeError:  # not weakly referable (a plain mapping in a test): read each time
        return value
    _READ[key] = (ref, value)
    return value


def _block(deployment: Any) -> dict[str, Any]:
    """The deployment's ``ehrs`` block as plain mappings (the settings model holds each entry typed)."""
    return _once(deployment, "block", _read_block)


def _read_block(deployment: Any) -> dict[str, Any]:
    block = getattr(deployment, "ehrs", None) or {}
    return {str(k): (v.model_dump() if hasattr(v, "model_dump") else v) for k, v in block.items()}


def ehrs_of(deployment: Any) -> tuple[Ehr, ...]:
    return _once(deployment, "ehrs", _read_ehrs)


def _read_ehrs(deployment: Any) -> tuple[Ehr, ...]:
    block = _block(deployment)
    if not block:
        return tuple(Ehr(id=normalise(i), name=normalise(i), iss=frozenset({normalise(i)}))
                     for i in getattr(deployment, "allowed_iss", None) or [])
    out = []
    for ehr_id, entry in block.items():
        entry = entry or {}
        if not isinstance(entry, dict):
            raise EhrIdentityError(f"ehrs.{ehr_id}: must be a mapping with iss and/or iss_patterns")
        exact = frozenset(normalise(i) for i in entry.get("iss") or [])
        if any(WILDCARD in i for i in exact):
            raise EhrIdentityError(f"ehrs.{ehr_id}.iss: exact values have no *; put patterns in iss_patterns")
        patterns = tuple(parse_pattern(p, f"ehrs.{ehr_id}.iss_patterns") for p in entry.get("iss_patterns") or [])
        if not exact and not patterns:
            raise EhrIdentityError(f"ehrs.{ehr_id}: names no iss and no iss_patterns")
        out.append(Ehr(id=str(ehr_id), name=str(entry.get("name") or ehr_id), iss=exact, patterns=patterns))
    return tuple(out)


def ehr_for(iss: str, deployment: Any) -> Ehr | None:
    """The EHR this ``iss`` belongs to, or None when the deployment's ``ehrs`` cannot tie it to one. Without an
    ``ehrs`` block every iss is its own EHR (the allow-list, checked first, decides which may launch)."""
    iss = normalise(iss)
    if not _block(deployment):
        return Ehr(id=iss, name=iss, iss=frozenset({iss}))
    for ehr in ehrs_of(deployment):
        if ehr.owns(iss):
            return ehr
    return None


def ehr_id_for(iss: str, deployment: Any) -> str:
    """The identity a launch's data keys on; an ``iss`` tied to no EHR keys on itself (it sees only its own)."""
    ehr = ehr_for(iss, deployment)
    return ehr.id if ehr is not None else normalise(iss)


def launch_allowed(iss: str, allowed_iss: Iterable[str], deployment: Any) -> bool:
    """May ``iss`` launch the app: an ``allowed_iss`` value, or one matching an ``iss_patterns`` entry."""
    # Bytes: compare_digest refuses non-ASCII str.
    wanted = normalise(iss).encode()
    if any(secrets.compare_digest(wanted, normalise(a).encode()) for a in allowed_iss):
        return True
    if not _block(deployment):
        return False
    iss = normalise(iss)
    return any(p.matches(iss) for ehr in ehrs_of(deployment) for p in ehr.patterns)


def allowed_origins(deployment: Any) -> list[str]:
    """The origins of the ``ehrs`` block's patterns (for the outbound URL policy): fixed hosts only."""
    if not _block(deployment):
        return []
    return list(dict.fromkeys(p.origin for ehr in ehrs_of(deployment) for p in ehr.patterns))


def ehr_named(ehr_id: str, deployment: Any) -> Ehr | None:
    """The EHR named ``ehr_id`` (without an ``ehrs`` block: the iss of that name, when allow-listed)."""
    return next((e for e in ehrs_of(deployment) if e.id == ehr_id), None)


def with_origin(block: dict[str, Any], old: str, new: str) -> dict[str, Any]:
    """An ``ehrs`` block with every value and pattern on origin ``old`` moved to ``new`` (the sandbox EHR on the
    port it actually runs on)."""
    def move(value: str) -> str:
        return new + value[len(old):] if value.startswith(old) else value

    return {ehr_id: {**entry, "iss": [move(i) for i in entry.get("iss") or []],
                     "iss_patterns": [move(p) for p in entry.get("iss_patterns") or []]}
            for ehr_id, entry in (block or {}).items()}
