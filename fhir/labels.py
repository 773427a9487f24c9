"""Security labels for everything the app writes to the chart, and the read-back check.

Every resource carries ``meta.security``:
- v3-Confidentiality ``R`` (restricted) or ``V`` (very restricted): who may see it;
- v3-ActCode ``SDV`` (sexual assault, abuse, or domestic violence information sensitivity):
  why it is sensitive, so the EHR's segmentation policy can act on it;
- v3-ActCode ``NOPAT`` (handling caveat: no disclosure to patient, family or caregivers
  without the attending provider's authorization) where the site turns it on — it keeps the
  note out of a portal that an abusive partner may read.

Sources: terminology.hl7.org CodeSystem v3-Confidentiality and v3-ActCode (HL7 Healthcare
Privacy and Security Classification System). R4 canonical systems below.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACTCODE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActCode"

CONFIDENTIALITY_DISPLAY = {
    "U": "unrestricted",
    "L": "low",
    "M": "moderate",
    "N": "normal",
    "R": "restricted",
    "V": "very restricted",
}
# Ordered from least to most restrictive: an EHR that rewrites R to N has weakened the label.
CONFIDENTIALITY_ORDER = ["U", "L", "M", "N", "R", "V"]

SDV = {"system": ACTCODE_SYSTEM, "code": "SDV",
       "display": "sexual assault, abuse, or domestic violence information sensitivity"}
NOPAT = {"system": ACTCODE_SYSTEM, "code": "NOPAT",
         "display": "no disclosure to patient, family or caregivers without attending provider's authorization"}


@dataclass(frozen=True)
class LabelPolicy:
    """Which labels a deployment puts on written resources."""

    confidentiality: str = "R"  # R or V
    sdv: bool = True
    nopat: bool = False

    def __post_init__(self) -> None:
        if self.confidentiality not in ("R", "V"):
            raise ValueError("confidentiality must be R or V for IPV content")

    @classmethod
    def from_mapping(cls, raw: dict[str, Any] | None) -> LabelPolicy:
        raw = raw or {}
        return cls(confidentiality=str(raw.get("confidentiality", "R")).upper(),
                   sdv=bool(raw.get("sdv", True)), nopat=bool(raw.get("nopat", False)))

    def codings(self) -> list[dict[str, str]]:
        """The ``meta.security`` list for a resource."""
        out = [{"system": CONFIDENTIALITY_SYSTEM, "code": self.confidentiality,
                "display": CONFIDENTIALITY_DISPLAY[self.confidentiality]}]
        if self.sdv:
            out.append(dict(SDV))
        if self.nopat:
            out.append(dict(NOPAT))
        return out


def apply_labels(resource: dict[str, Any], policy: LabelPolicy) -> dict[str, Any]:
    """Set ``meta.security`` (keeping any other meta); returns the same dict."""
    meta = resource.setdefault("meta", {})
    existing = [c for c in meta.get("security", []) if _key(c) not in {_key(x) for x in policy.codings()}]
    meta["security"] = policy.codings() + existing
    return resource


@dataclass
class LabelCheck:
    """Outcome of comparing what we wrote with what the EHR stored."""

    ok: bool
    missing: list[str] = field(default_factory=list)  # "system-name#code", no PHI
    weakened: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if self.ok:
            return "labels kept"
        parts = []
        if self.missing:
            parts.append("missing " + ", ".join(self.missing))
        if self.weakened:
            parts.append("weakened " + ", ".join(self.weakened))
        return "; ".join(parts)


def verify_labels(expected: Iterable[dict[str, Any]], stored_resource: dict[str, Any]) -> LabelCheck:
    """Did the EHR keep our labels? Extra labels it adds are fine; missing or a lower
    confidentiality code are not. A higher confidentiality (R -> V) is accepted."""
    stored = (stored_resource.get("meta") or {}).get("security") or []
    stored_keys = {_key(c) for c in stored}
    stored_conf = [c.get("code") for c in stored if c.get("system") == CONFIDENTIALITY_SYSTEM]
    missing: list[str] = []
    weakened: list[str] = []
    for coding in expected:
        key = _key(coding)
        if key in stored_keys:
            continue
        if coding.get("system") == CONFIDENTIALITY_SYSTEM:
            want = CONFIDENTIALITY_ORDER.index(coding["code"])
            ranks = [CONFIDENTIALITY_ORDER.index(c) for c in stored_conf if c in CONFIDENTIALITY_ORDER]
            if ranks and max(ranks) >= want:
                continue  # the EHR raised it: still protected
            if ranks:
                weakened.append(f"{_short(coding)} -> {CONFIDENTIALITY_ORDER[max(ranks)]}")
                continue
        missing.append(_short(coding))
    return LabelCheck(ok=not missing and not weakened, missing=missing, weakened=weakened)


def _key(coding: dict[str, Any]) -> tuple[str, str]:
    return (coding.get("system") or "", coding.get("code") or "")


def _short(coding: dict[str, Any]) -> str:
    system = (coding.get("system") or "").rsplit("/", 1)[-1]
    return f"{system}#{coding.get('code')}"
