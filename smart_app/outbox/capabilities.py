"""May a send rely on If-None-Exist? The EHR profile's word; where it says unknown, the server's
CapabilityStatement (FHIR R4 ``CapabilityStatement.rest.resource.conditionalCreate``), read once per server."""

from __future__ import annotations

from typing import Any

from config.ehr_profile import EhrProfile
from fhir.client import FhirError


class ConditionalCreateSupport:
    """One worker's memory of what each FHIR server declared. Anything unclear counts as no."""

    def __init__(self) -> None:
        self._declared: dict[str, dict[str, bool]] = {}  # base URL -> resource type -> conditionalCreate

    def honours(self, profile: EhrProfile, client: Any, kind: str) -> bool:
        if profile.honours_conditional_create != "unknown":
            return profile.honours_conditional_create == "true"
        base = getattr(client, "base_url", None)
        if base is None or not hasattr(client, "capabilities"):
            return False
        if base not in self._declared:
            found: dict[str, bool] = {}
            try:
                statement = client.capabilities()
            except FhirError:
                return False  # not known this time (not remembered: the next attempt reads it again)
            for rest in statement.get("rest") or []:
                for res in rest.get("resource") or []:
                    found[res.get("type")] = res.get("conditionalCreate") is True
            self._declared[base] = found
        return self._declared[base].get(kind, False)
