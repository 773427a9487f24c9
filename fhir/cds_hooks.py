"""CDS Hooks 2.0 wire layer: the CDS Client's JWT, prefetch templates and the check-in card.

Spec: CDS Hooks 2.0 (https://cds-hooks.hl7.org/2.0/), sections cited inline:
- "Trusting CDS Clients": every call carries ``Authorization: Bearer <JWT>`` signed by the client's
  private key (ES384 or RS384 are the algorithms the spec requires services to support); header
  ``alg``, ``kid`` (and ``typ``=JWT, optional ``jku``); payload ``iss`` (the client), ``aud`` (the
  CDS Service endpoint URL called), ``exp``, ``iat``, ``jti`` (a nonce "used to protect against replay
  attacks"), optional ``sub`` and ``tenant``. Services "SHOULD allowlist the iss, jku and sub"; we
  accept only an ``iss`` listed in the deployment file with its own JWKS (URL or inline) and never
  follow a ``jku`` from the token.
- "Prefetch Template": only the context tokens (``{{context.patientId}}``, ``{{context.encounterId}}``)
  and the user tokens are defined; there is no date arithmetic, so the interval is applied here,
  after the data arrives, and in our own search when prefetch is missing.
- "Providing FHIR Resources to a CDS Service": when a prefetch key is missing the service fetches
  it from ``fhirServer`` with ``fhirAuthorization.access_token``.
- "Card Attributes" / "Link": ``summary`` (< 140 chars), ``indicator`` info|warning|critical,
  ``source.label``, ``links[].type`` ``smart`` makes the client launch the SMART app at ``url``.

Imports nothing from smart_app/.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import jwt

# CDS Hooks 2.0 "Trusting CDS Clients": ES384 and RS384 required of services; asymmetric only.
ALLOWED_ALGS = ("ES384", "RS384", "ES256", "RS256", "ES512", "RS512")
LEEWAY_SECONDS = 30
MAX_LIFETIME_SECONDS = 600  # a request token lives minutes, not hours (the spec recommends 5 min)
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


class CdsAuthError(Exception):
    """The request is not from an allow-listed CDS Client (always answered with 401)."""


@dataclass(frozen=True)
class CdsClientConfig:
    """One EHR allowed to call us: its JWT ``iss``, its keys, the FHIR servers it may name."""

    iss: str
    jwks: dict[str, Any] | None = None
    jwks_urls: tuple[str, ...] = ()  # the first is the default; a token's jku is used only if listed
    fhir_servers: tuple[str, ...] = ()
    site: str = "unspecified"

    def jwks_url_for(self, jku: Any) -> str | None:
        """The JWKS URL to read: the token's ``jku`` when it is one of ours (Oracle Health names its key set
        that way), else the first configured. A jku not on the list is never fetched."""
        if isinstance(jku, str) and jku in self.jwks_urls:
            return jku
        return self.jwks_urls[0] if self.jwks_urls else None


def bearer(header: str | None) -> str:
    if not header or not header.startswith("Bearer ") or len(header) > 8192:
        raise CdsAuthError("missing bearer token")
    return header[7:].strip()


def unverified_claims(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise CdsAuthError("malformed token") from None
    return header, claims


def key_from_jwks(jwks: dict[str, Any], kid: str, alg: str) -> Any:
    for k in jwks.get("keys") or []:
        if isinstance(k, dict) and k.get("kid") == kid and k.get("use", "sig") == "sig" \
                and k.get("alg") in (None, alg):
            try:
                return jwt.PyJWK.from_dict(k, algorithm=alg).key
            except jwt.PyJWTError:
                raise CdsAuthError("unusable key") from None
    return None


def verify_request_jwt(token: str, *, header: dict[str, Any], key: Any, iss: str, audience: str,
                       now: float | None = None) -> dict[str, Any]:
    """Signature, iss, aud (the endpoint URL), exp, iat, jti. Returns the claims."""
    alg = header.get("alg")
    if alg not in ALLOWED_ALGS:
        raise CdsAuthError("algorithm not allowed")
    try:
        claims = jwt.decode(token, key, algorithms=[alg], audience=audience, issuer=iss, leeway=LEEWAY_SECONDS,
                            options={"require": ["iss", "aud", "exp", "iat", "jti"]})
    except jwt.PyJWTError as exc:
        raise CdsAuthError(type(exc).__name__) from None
    now = time.time() if now is None else now
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int | float) or iat > now + LEEWAY_SECONDS:
        raise CdsAuthError("iat in the future")
    if exp - now > MAX_LIFETIME_SECONDS:
        raise CdsAuthError("token lives too long")
    if not isinstance(claims.get("jti"), str) or not 8 <= len(claims["jti"]) <= 256:
        raise CdsAuthError("bad jti")
    return claims


def jti_key(iss: str, jti: str) -> str:
    return hashlib.sha256(f"{iss} {jti}".encode()).hexdigest()


# ---------------------------------------------------------------------------- prefetch


def screen_codes(codes: list[tuple[str, str]]) -> str:
    """The ``code`` search value: system|code,... (FHIR R4 search, token parameter, OR by comma)."""
    return ",".join(f"{s}|{c}" for s, c in codes)


def prefetch_templates(codes: list[tuple[str, str]], *, with_encounter: bool) -> dict[str, str]:
    templates = {
        "patient": "Patient/{{context.patientId}}",
        # No date in the template (2.0 has no date token): the service keeps only those inside the interval.
        "screens": f"Observation?patient={{{{context.patientId}}}}&code={screen_codes(codes)}",
    }
    if with_encounter:
        templates["encounter"] = "Encounter/{{context.encounterId}}"
    return templates


def age_on(birth_date: str | None, today: date) -> int | None:
    try:
        born = date.fromisoformat((birth_date or "")[:10]) if len(birth_date or "") >= 10 else None
    except ValueError:
        return None
    if born is None:
        return None
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def observation_when(obs: dict[str, Any]) -> datetime | None:
    value = obs.get("effectiveDateTime") or (obs.get("effectivePeriod") or {}).get("start") or obs.get("issued")
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00")) if len(value) > 10 \
            else datetime.fromisoformat(value + "T00:00:00+00:00")
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def is_screen(obs: dict[str, Any], codes: set[tuple[str, str]]) -> bool:
    if obs.get("resourceType") != "Observation" or obs.get("status") in ("entered-in-error", "cancelled"):
        return False
    return any((c.get("system"), c.get("code")) in codes for c in (obs.get("code") or {}).get("coding") or [])


def bundle_resources(bundle: Any) -> list[dict[str, Any]] | None:
    """Resources of a searchset Bundle; None when it is not one."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        return None
    return [e["resource"] for e in bundle.get("entry") or [] if isinstance(e, dict) and isinstance(
        e.get("resource"), dict) and (e.get("search") or {}).get("mode", "match") == "match"]


def card(*, uuid: str, summary: str, detail: str, source_label: str, link_label: str, launch_url: str,
         app_context: str | None = None) -> dict[str, Any]:
    """One info card with a SMART app link (CDS Hooks 2.0 "Card Attributes", "Link")."""
    if len(summary) >= 140:
        raise ValueError("card summary must be under 140 characters")
    link: dict[str, Any] = {"label": link_label, "url": launch_url, "type": "smart"}
    if app_context:
        link["appContext"] = app_context
    return {"uuid": uuid, "summary": summary, "detail": detail, "indicator": "info",
            "source": {"label": source_label}, "links": [link]}
