"""The go-live leak check's file (``flask --app smart_app leak-check --file leak-check.yaml``, DEPLOY.md).

The site names its test patient (a patient the EHR marks as test data) and hands over the patient-facing sign-ins
of that patient and of a proxy linked to the patient: the token answers of a portal app's standalone patient launch,
each in a file of its own. Paths are read next to this file. Unknown keys are refused, as everywhere.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from config.files import SettingsError, Strict, read_yaml, validate


class TestPatient(Strict):
    id: str = Field(min_length=1, description="the test patient's FHIR id")
    encounter: str | None = Field(None, description="an encounter of the test patient (Epic files a note only "
                                                    "against an existing encounter)")
    author: str | None = Field(None, description="the note's author as a reference (Practitioner/<id>); where the "
                                                 "writer is a clinician's sign-in, that clinician")


class LeakCheckFile(Strict):
    iss: str = Field(min_length=1, description="the FHIR base (one of the deployment's allowed_iss)")
    test_patient: TestPatient
    patient_token_file: str = Field(min_length=1, description="the test patient's portal sign-in (token answer "
                                                              "JSON)")
    proxy_token_file: str | None = Field(None, description="a proxy's portal sign-in for the same patient")
    clinician_token_file: str | None = Field(None, description="a test clinician's sign-in the writes use; unset = "
                                                               "the deployment's backend_services (system) token")
    cleanup: bool = Field(True, description="delete the test writes afterwards where the EHR allows it")

    @field_validator("iss")
    @classmethod
    def _no_slash(cls, value: str) -> str:
        return value.rstrip("/")


def read_leak_check(path: str) -> tuple[LeakCheckFile, Path]:
    """The file, validated, and the folder its relative paths are read from."""
    where = Path(path)
    return validate(LeakCheckFile, read_yaml(where, "leak-check"), str(where)), where.resolve().parent


def read_token(base: Path, name: str) -> dict[str, Any]:
    """A token answer as the EHR's token endpoint gave it (access_token, patient, scope, ...)."""
    path = Path(name) if Path(name).is_absolute() else base / name
    try:
        token = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsError([f"{path}: not a token answer ({type(exc).__name__})"]) from None
    if not isinstance(token, dict) or not token.get("access_token"):
        raise SettingsError([f"{path}: has no access_token"])
    return token
