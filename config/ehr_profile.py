"""What an EHR can do: the EHR-profile schema (``config/ehr_profiles/<name>.yaml``, or a site's own file).

A profile says which resources the EHR takes from an app, the vendor rules a write must follow and what the EHR
is known to keep, each rule citing its source in the file. It never says what a site turns on: that is the
deployment file's, and start-up checks the two against each other (``config/checks.py``).

The FHIR wire layer reads no profile: ``EhrProfile.write_rules`` hands the builders what they need.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from config.files import SettingsError, Strict, read_yaml, validate
from fhir.builders import ALL_RESOURCES, WriteRules
from fhir.labels import LabelPolicy

PROFILES_DIR = Path(__file__).resolve().parent / "ehr_profiles"
# Only the referral order and the note may be ticked by default; the score and the rest are always optional.
DEFAULT_ON = ("ServiceRequest", "DocumentReference")


class ProfileError(SettingsError):
    """An EHR profile file is missing or malformed."""


class RestrictedNoteTypeMissing(ProfileError):
    """The EHR does not (or may not) keep security labels and no restricted note type is configured."""


def _tri(value: Any) -> Any:
    """YAML's true / false as the words: the three-valued keys read ``true``, ``false`` or ``unknown``."""
    if value is True or value is False:
        return "true" if value else "false"
    return str(value).lower() if value is not None else "unknown"


Tri = Annotated[Literal["true", "false", "unknown"], BeforeValidator(_tri)]
ResourceKind = Literal["QuestionnaireResponse", "Observation", "ServiceRequest", "DocumentReference", "Task",
                      "Condition"]


class NoteCoding(Strict):
    """One coding: a note type or category (``system``, ``code``, ``display``)."""

    system: str = ""
    code: str = Field(min_length=1)
    display: str = ""

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: Any) -> Any:
        """``system|code|display`` in one string, as an override may give it."""
        if isinstance(value, str):
            parts = [p.strip() for p in value.split("|")]
            if len(parts) < 2 or not parts[1]:
                raise ValueError("needs system and code (system|code|display)")
            return {"system": parts[0], "code": parts[1], **({"display": parts[2]} if len(parts) > 2 else {})}
        return value

    def as_dict(self) -> dict[str, str]:
        return {k: v for k, v in (("system", self.system), ("code", self.code), ("display", self.display)) if v}


class Requires(Strict):
    encounter: bool = Field(False, description="the note needs an existing encounter of the same patient")
    author: bool = Field(False, description="exactly one author: the signed-in provider")
    period: bool = Field(False, description="context.period start and end, with time")


class Security(Strict):
    confidentiality: Literal["R", "V"] = "R"
    sdv: bool = True
    nopat: bool = False


class ReadBack(Strict):
    enabled: bool = True
    max_attempts: int = Field(3, ge=1, le=5)


class Retry(Strict):
    max_attempts: int = Field(10, ge=1)
    base_delay: float = Field(2.0, gt=0)
    max_delay: float = Field(300.0, gt=0)


class EhrProfile(Strict):
    """How one EHR takes our writes. Every key is described in config/ehr_profiles/README.md."""

    name: str = ""
    description: str = ""
    mode: Literal["single", "transaction"] = "single"
    transaction: bool | None = Field(None, description="the EHR accepts transaction Bundles (default: mode)")
    resources: tuple[ResourceKind, ...] = ("DocumentReference",)
    optional_resources: tuple[ResourceKind, ...] = ()
    note_type: NoteCoding
    note_category: NoteCoding
    restricted_note_type: NoteCoding | None = None
    doc_status: Literal["final", "preliminary", "amended"] | None = "final"
    content_type: str = "text/plain; charset=utf-8"
    requires: Requires = Requires()
    detailed_note_allowed: bool = True
    identifier_system: str = "urn:ipv-screen:writeback"
    scope_version: Literal["v1", "v2"] = "v2"
    write_context: Literal["patient", "user"] = "patient"
    honours_conditional_create: Tri = "unknown"
    identifier_kept: Tri = "unknown"
    labels_kept: Literal["kept", "dropped", "unknown"] = "unknown"
    search_date_param: str = "date"
    security: Security = Security()
    read_back: ReadBack = ReadBack()
    online_access: bool = Field(True, description="the EHR gives refresh tokens for the user's session")
    backend_services: Tri = Field("unknown", description="a system token (SMART Backend Services) may write")
    retry: Retry = Retry()
    scopes: tuple[str, ...] = Field((), description="the scopes a write needs, in the EHR's spelling")
    status_updates: tuple[Literal["Task", "ServiceRequest"], ...] = ()
    sources: tuple[str, ...] = ()
    # Not a key of the file: what the outbox stores to reload the profile (bundled name or absolute path).
    ref: str = Field("", exclude=True)

    @field_validator("resources", "optional_resources", "scopes", "status_updates", "sources", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return () if value is None else value

    @model_validator(mode="after")
    def _rules(self) -> EhrProfile:
        transaction = self.mode == "transaction" if self.transaction is None else self.transaction
        if self.mode == "transaction" and not transaction:
            raise ValueError("mode transaction needs transaction: true")
        # Only the referral and the note may be pre-ticked; anything else listed by default moves to optional.
        default_on = tuple(r for r in self.resources if r in DEFAULT_ON)
        optional = tuple(dict.fromkeys(self.optional_resources + tuple(r for r in self.resources
                                                                       if r not in default_on)))
        object.__setattr__(self, "transaction", transaction)
        object.__setattr__(self, "resources", default_on)
        object.__setattr__(self, "optional_resources", optional)
        return self

    # -- loading -------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, name_or_path: str, base: Path | None = None) -> EhrProfile:
        """A bundled profile by name, or a site's file by path (relative to ``base``, else the working folder)."""
        ref = resolve_profile_ref(name_or_path, base)
        path = Path(ref) if Path(ref).is_absolute() else PROFILES_DIR / f"{ref}.yaml"
        try:
            raw = read_yaml(path, "EHR profile")
            profile = validate(cls, raw, str(path))
        except SettingsError as exc:
            raise ProfileError(exc.problems) from None
        return profile.model_copy(update={"ref": ref, "name": profile.name or path.stem})

    def with_restricted_note_type(self, coding: NoteCoding | None) -> EhrProfile:
        """This profile with the site's restricted note type (the deployment's wins over the profile's)."""
        if coding is None or coding == self.restricted_note_type:
            return self
        return self.model_copy(update={"restricted_note_type": coding})

    # -- what the rest of the app reads --------------------------------------------------------------------
    @property
    def offered(self) -> tuple[str, ...]:
        return tuple(r for r in ALL_RESOURCES if r in self.resources or r in self.optional_resources)

    @property
    def labels(self) -> LabelPolicy:
        return LabelPolicy(self.security.confidentiality, sdv=self.security.sdv, nopat=self.security.nopat)

    @property
    def labels_protect(self) -> bool:
        """Whether the note's protection can rest on its security labels."""
        return self.labels_kept == "kept"

    @property
    def document_type(self) -> dict[str, str]:
        """The note's type: the site's restricted note type where one is configured."""
        return (self.restricted_note_type or self.note_type).as_dict()

    @property
    def search_by_identifier(self) -> bool:
        """An unknown outcome can be resolved by searching our business identifier."""
        return self.identifier_kept == "true"

    def needed_scope(self, kind: str, letters: str = "c") -> str:
        return self.write_rules.needed_scope(kind, letters)

    @property
    def write_rules(self) -> WriteRules:
        """What the FHIR builders need from this profile, as plain values."""
        return WriteRules(
            offered=self.offered, identifier_system=self.identifier_system, labels=self.labels,
            document_type=self.document_type, note_category=self.note_category.as_dict(),
            content_type=self.content_type, doc_status=self.doc_status, requires_period=self.requires.period,
            requires_encounter=self.requires.encounter, requires_author=self.requires.author,
            write_context=self.write_context, scope_version=self.scope_version)

    def check_startup(self) -> None:
        """Where labels are not known to be kept, the note's protection must come from a restricted note type."""
        if self.labels_kept != "kept" and "DocumentReference" in self.offered and not self.restricted_note_type:
            raise RestrictedNoteTypeMissing([
                f"EHR profile {self.name}: this EHR does not keep security labels (labels_kept: {self.labels_kept}), "
                "so the note's confidentiality must come from a restricted note type. Set restricted_note_type "
                "(system, code, display) in the deployment file to the site's restricted note type."])


def resolve_profile_ref(name_or_path: str, base: Path | None = None) -> str:
    """What the outbox stores: the bare name for a bundled profile, else the file's absolute path."""
    path = Path(name_or_path)
    if not path.suffix and "/" not in name_or_path:
        return name_or_path
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return str(path.resolve())
