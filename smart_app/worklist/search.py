"""Finding one referral in the queue: by the reference code the chart note carries, or by the patient's MRN.

The MRN is never stored, logged or put in a URL. At consent the referral keeps a keyed HMAC of it
(``referral.mrn_key``); a social worker's search computes the same HMAC from what they typed, on a POST, and
the launch keeps only that HMAC (server-side, encrypted with the launch's data) while the queue shows the
result. The HMAC is of the MRN alone, not of the EHR: the queue's scope already limits a search to the
user's own EHR, and one EHR known by several ``iss`` values still finds its patients.

Referrals made before the column existed get theirs from their encrypted summary during ``db upgrade``
(smart_app/worklist/backfill.py); one whose summary no configured key decrypts keeps ``mrn_key`` NULL, and the
queue says it cannot be found by MRN rather than decrypting every summary to look.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement

from fhir.builders import CODE_ALPHABET
from smart_app.store.crypto import keyed_hash
from smart_app.store.models import ReferralRecord

NO_MRN = "NONE"  # mrn_key of a referral whose launch gave no MRN (NULL means: made before the column)
MRN_MAX = 64
_CODE = re.compile(f"^[{CODE_ALPHABET}]{{8}}$")


def normalise_mrn(value: str | None) -> str | None:
    """The MRN as compared: no spaces, upper case (what a person types and what the EHR sends agree)."""
    text = re.sub(r"\s+", "", value or "").upper()
    return text[:MRN_MAX] or None


def mrn_key(mrn: str | None) -> str:
    """Keyed HMAC of an MRN (``NO_MRN`` when there is none)."""
    value = normalise_mrn(mrn)
    return keyed_hash("mrn|" + value) if value else NO_MRN


def mrn_key_of(context: dict[str, Any]) -> str:
    """The referral's ``mrn_key`` from the launch context's patient (its MR identifier, fhir/context.py)."""
    return mrn_key(((context or {}).get("patient") or {}).get("mrn"))


def normalise_code(value: str | None) -> str | None:
    """A reference code as the note prints it (``ABCD-EFGH``), from what was typed (any case, with or without
    the hyphen or spaces); None when it cannot be one."""
    text = re.sub(r"[\s-]+", "", value or "").upper()
    return f"{text[:4]}-{text[4:]}" if _CODE.match(text) else None


@dataclass(frozen=True)
class Search:
    """One active search: by reference code (``code``, safe in a URL) or by MRN (``mrn_key``, kept server-side)."""

    code: str | None = None
    mrn_key: str | None = None

    @property
    def kind(self) -> str:
        return "code" if self.code else "mrn"

    def where(self) -> ColumnElement[bool]:
        if self.code:
            return ReferralRecord.reference_code == self.code
        return ReferralRecord.mrn_key == self.mrn_key
