"""Which EHR an ``iss`` belongs to: the deployment names each EHR once with the ``iss`` values that are it.

One EHR may answer on several ``iss`` values (an EHR launch and a standalone launch, a launcher that gives
each standalone launch its own ``iss``). The deployment file ties them together::

    ehrs:
      bwh:
        name: Brigham EHR
        iss: [https://ehr.example.org/fhir]             # exact values (a trailing slash is ignored)
        iss_patterns: ["https://launcher.example.org/v/*/fhir"]   # ``*`` is one path segment

Without an ``ehrs`` block each allow-listed ``iss`` is its own EHR, named by itself (what the app always
did). Worklist scope and routing key on the identity, never on the raw ``iss`` string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any


class EhrIdentityError(ValueError):
    """The deployment's ``ehrs`` block is malformed (the message names the entry)."""


@dataclass(frozen=True)
class Ehr:
    id: str
    name: str
    iss: frozenset[str]
    patterns: tuple[re.Pattern[str], ...] = ()

    def owns(self, iss: str) -> bool:
        return iss in self.iss or any(p.fullmatch(iss) for p in self.patterns)


def _norm(iss: str) -> str:
    return str(iss or "").rstrip("/")


def _pattern(text: str) -> re.Pattern[str]:
    """``*`` matches one path segment (no ``/``); everything else is literal."""
    return re.compile("[^/]+".join(re.escape(part) for part in _norm(text).split("*")))


def ehrs_of(deployment: Any) -> tuple[Ehr, ...]:
    block = (getattr(deployment, "extra", None) or {}).get("ehrs")
    if not block:
        return tuple(Ehr(id=_norm(i), name=_norm(i), iss=frozenset({_norm(i)}))
                     for i in getattr(deployment, "allowed_iss", None) or [])
    if not isinstance(block, dict):
        raise EhrIdentityError("ehrs: must map an EHR id to its name and iss values")
    out = []
    for ehr_id, entry in block.items():
        entry = entry or {}
        if not isinstance(entry, dict):
            raise EhrIdentityError(f"ehrs.{ehr_id}: must be a mapping with iss and/or iss_patterns")
        exact = frozenset(_norm(i) for i in entry.get("iss") or [])
        patterns = tuple(_pattern(p) for p in entry.get("iss_patterns") or [])
        if not exact and not patterns:
            raise EhrIdentityError(f"ehrs.{ehr_id}: names no iss and no iss_patterns")
        out.append(Ehr(id=str(ehr_id), name=str(entry.get("name") or ehr_id), iss=exact, patterns=patterns))
    return tuple(out)


def ehr_for(iss: str, deployment: Any) -> Ehr | None:
    """The EHR this ``iss`` belongs to, or None when the deployment's ``ehrs`` cannot tie it to one. Without an
    ``ehrs`` block every iss is its own EHR (the allow-list, checked first, decides which may launch)."""
    iss = _norm(iss)
    if not (getattr(deployment, "extra", None) or {}).get("ehrs"):
        return Ehr(id=iss, name=iss, iss=frozenset({iss}))
    for ehr in ehrs_of(deployment):
        if ehr.owns(iss):
            return ehr
    return None


def ehr_id_for(iss: str, deployment: Any) -> str:
    """The identity a launch's data keys on; an ``iss`` tied to no EHR keys on itself (it sees only its own)."""
    ehr = ehr_for(iss, deployment)
    return ehr.id if ehr is not None else _norm(iss)
