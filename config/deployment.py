"""What this site turns on: the deployment file (``config/deployments/<name>.yaml`` or a site's own path).

``Site`` holds the keys at the top of the file (client registration, scopes, allowed issuers, the EHR profile,
clinical and social-work choices); ``Tuning`` the knobs under its one ``tuning:`` block. Both refuse unknown
keys. What the EHR *can* do is its profile's (config/ehr_profile.py); start-up checks the two against each other.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from config.ehr_profile import NoteCoding
from config.files import Strict
from config.languages import clinician_codes
from fhir.builders import BROADLY_VISIBLE, WriteRules

DEPLOYMENTS_DIR = Path(__file__).resolve().parent / "deployments"
ClientAuthKind = Literal["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]
QueueRole = Literal["social_worker", "program_manager"]


def _words(value: Any) -> Any:
    """A list given as one comma-separated string (as an override may give it)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return [] if value is None else value


Words = Annotated[list[str], BeforeValidator(_words)]


def _urls(value: Any) -> Any:
    return [str(u).strip().rstrip("/") for u in _words(value)]


Urls = Annotated[list[str], BeforeValidator(_urls)]


# -- blocks of the deployment file ---------------------------------------------------------------------------
class BackendServices(Strict):
    """SMART Backend Services: the outbox writes with a system token when a launch's own token is gone."""

    scope: str = Field(min_length=1, description="the system scopes asked (client_credentials)")


class CodeRule(Strict):
    system: str | None = None
    code: str | None = None
    code_prefix: str | None = None

    @field_validator("code", "code_prefix", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return None if value is None else str(value)

    @model_validator(mode="after")
    def _some_code(self) -> CodeRule:
        if self.code is None and self.code_prefix is None:
            raise ValueError("needs code or code_prefix")
        return self


class RoleRules(Strict):
    """Which PractitionerRole codings or texts (regular expressions, case-insensitive), or which users, make this
    role."""

    codes: list[CodeRule] = []
    texts: list[str] = []
    users: list[str] = Field([], description="users named by their fhirUser reference (Practitioner/<id>)")

    @field_validator("users")
    @classmethod
    def _references(cls, users: list[str]) -> list[str]:
        for user in users:
            if "/" not in user:
                raise ValueError(f"{user!r} is not a user reference (Practitioner/<id>)")
        return users

    @field_validator("texts")
    @classmethod
    def _patterns(cls, texts: list[str]) -> list[str]:
        for text in texts:
            try:
                re.compile(text)
            except re.error as exc:
                raise ValueError(f"{text!r} is not a regular expression ({exc})") from None
        return texts


class Coverage(Strict):
    """Sites each user or role covers when the EHR's PractitionerRole names none."""

    users: dict[str, list[str]] = {}
    roles: dict[QueueRole, list[str]] = {}


class Due(Strict):
    """How long a referral may wait for a first contact (smart_app/worklist/due.py reads them: ``1 business hour``,
    ``4 hours``, ``2 business days``; a value it cannot read stops start-up naming the key)."""

    urgent: str = "1 business hour"
    routine: str = "2 business days"


class Worklist(Strict):
    time_zone: str = "America/New_York"
    coverage: Coverage = Coverage()
    due: Due = Due()


class EhrEntry(Strict):
    """One EHR by the ``iss`` values that are it: exact ones, and patterns where ``*`` is one path segment."""

    name: str = ""
    iss: Urls = []
    iss_patterns: list[str] = []

    @model_validator(mode="after")
    def _some_iss(self) -> EhrEntry:
        if not self.iss and not self.iss_patterns:
            raise ValueError("names no iss and no iss_patterns")
        return self


class Team(Strict):
    """A team that works routed referrals (smart_app/worklist/routing.py)."""

    id: str = Field(min_length=1)
    name: str = Field(min_length=1, description="what the clinician is told")
    ehr: str | None = Field(None, description="an id in ehrs; unset = every EHR of the deployment")
    sites: list[str] = []
    members: list[str] = Field([], description="queue roles or Practitioner references")
    fallback: bool = False
    program: str | None = Field(None, description="directory service id whose hours and holidays the team keeps "
                                                  "(due times)")

    @field_validator("id", "ehr", "program", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return None if value is None else str(value)


class Routing(Strict):
    teams: list[Team] = []


class Report(Strict):
    site_names: dict[str, str] = Field({}, description="site key -> the name the program report shows")

    @field_validator("site_names", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return {str(k): str(v) for k, v in (value or {}).items()}


class Population(Strict):
    name: Literal["uspstf", "all-adults"] = "uspstf"
    genders: list[str] | None = None
    min_age: int | None = None
    max_age: int | None = None


class CdsClient(Strict):
    """One EHR allowed to call the CDS Hooks service: its JWT ``iss``, its keys, the FHIR servers it may name."""

    iss: str = Field(min_length=1)
    jwks: dict[str, Any] | None = None
    jwks_url: Words = []
    fhir_servers: Urls = []
    site: str = "unspecified"

    @model_validator(mode="after")
    def _some_keys(self) -> CdsClient:
        if not (self.jwks or self.jwks_url):
            raise ValueError("needs jwks or jwks_url")
        return self


class Cds(Strict):
    interval_months: int = Field(12, ge=1)
    population: Population = Population()
    clients: list[CdsClient] = []

    @field_validator("population", mode="before")
    @classmethod
    def _named(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class BroadlyVisible(Strict):
    """IPV content where it copies forward or many people see it: a problem list entry or the visit's diagnosis
    (health summaries, after-visit summaries, a newborn's chart) and the score as an Observation (a flowsheet or
    results row). Each is off unless the deployment turns it on; check-config warns while one is on, and
    `flask leak-check` reads what it writes as the patient and as a proxy."""

    score_observation: bool = Field(False, description="Offer the screening score as an Observation (a flowsheet "
                                                       "or results row).")
    condition: Literal["off", "problem-list-item", "encounter-diagnosis"] = Field(
        "off", description="Offer a Condition: a problem list entry or the visit's diagnosis.")

    def kinds(self) -> tuple[str, ...]:
        """The broadly visible kinds this deployment turns on."""
        return tuple(k for k, on in (("Observation", self.score_observation), ("Condition", self.condition != "off"))
                     if on)

    def narrow(self, rules: WriteRules) -> WriteRules:
        """An EHR's write rules as this site uses them: the broadly visible kinds only where turned on."""
        offered = tuple(k for k in rules.offered if k not in BROADLY_VISIBLE or k in self.kinds())
        category = self.condition if self.condition != "off" else rules.condition_category
        return replace(rules, offered=offered, condition_category=category)


# -- the file ------------------------------------------------------------------------------------------------
class Site(Strict):
    """The keys at the top of a deployment file: what this site registered and turns on."""

    client_id: str = Field(description="The client id the EHR registered for this app.")
    client_auth: ClientAuthKind = Field("none", description="How the app authenticates to the token endpoint.")
    private_key_file: str | None = Field(None, description="PEM private key for private_key_jwt (RS384 or ES384); "
                                                           "a relative path is read next to the deployment file.")
    signing_alg: Literal["RS384", "ES384"] = Field("RS384", description="private_key_jwt signing algorithm.")
    key_id: str | None = Field(None, description="`kid` of the signing key in the JWKS.")
    next_private_key_file: str | None = Field(None, description="The next signing key, published in the JWKS "
                                                                "beside the current one and never used to sign "
                                                                "(README, Key rotation).")
    next_key_id: str | None = Field(None, description="`kid` of the next signing key.")
    scopes_ehr: str = Field("launch openid fhirUser patient/Patient.rs patient/Encounter.rs",
                            description="Scopes asked at an EHR launch.")
    scopes_standalone: str = Field("openid fhirUser user/Patient.rs",
                                   description="Scopes asked at a standalone launch (the social-work queue: no "
                                               "launch/patient).")
    allowed_iss: Urls = Field([], description="FHIR base URLs allowed to launch the app.")
    standalone_iss: str | None = Field(None, description="The FHIR base a standalone launch uses by default.")
    outbound_hosts: Urls = Field([], description="Extra origins the app may call (an authorization server on "
                                                 "another host), besides the allowed issuers' origins.")
    ehr_profile: str = Field("generic-smart2", description="EHR profile: a name in config/ehr_profiles/ or a path "
                                                           "(relative to the deployment file).")
    restricted_note_type: NoteCoding | None = Field(
        None, description="`{system, code, display}`: the site's restricted note type; required where the EHR "
                          "does not keep security labels.")
    backend_services: BackendServices | None = Field(
        None, description="`{scope: ...}`: write with a system token when a launch's token is gone "
                          "(needs private_key_jwt and an EHR profile that allows it).")
    default_instrument: str = Field("hits", description="Instrument asked by default.")
    offered_instruments: Words = Field(["hits", "hark", "pvs", "wast-short", "e-hits"],
                                       description="Instruments offered.")
    instrument_dirs: Words = Field([], description="Extra folders of site Questionnaire JSON files, added to "
                                                   "`fhir/questionnaires/` (a relative path is read from the "
                                                   "repository root). A malformed file stops start-up naming it.")
    danger_check: str = Field("", description="Danger-check Questionnaire id; empty = the first one found.")
    cutoffs: dict[str, float] = Field({}, description="Replaces an instrument's declared cut-off, e.g. "
                                                      "`{e-hits: 9}` (E-HITS: Chan 2010's >= 9 instead of the "
                                                      "default >= 7, Iverson 2015).")
    clinician_language: str = Field("en", description="Language of the clinician's own text: one translated on "
                                                        "the clinician's side too (`clinician: true` in "
                                                        "`config/languages.yaml`); the patient's comes from "
                                                        "Patient.communication and the page's switch.")
    default_programs: Words = Field([], description="Directory service ids offered (with their pagers) when "
                                                    "the launch does not say where the visit is, e.g. "
                                                    "`[passageway, haven]`.")
    screen_setting: Literal["shared", "private"] = Field(
        "shared", description="Where the app's pages are seen: `shared` (exam-room and workstation screens others may "
                              "glance at) or `private` (a screen only the clinician sees).")
    neutral_headings: bool | None = Field(
        None, description="On-screen headings that do not name the topic (\"Check-in questions\", \"A few more "
                          "questions\", \"Next steps\"), the instrument's name one tap away; unset = on where "
                          "`screen_setting` is `shared`, off where it is `private`.")
    handout_qr_url: str | None = Field(None, description="The neutral page the handout's optional QR code "
                                                         "opens (never a DV website); unset = no QR option.")
    urgent_security_step: dict[str, str] = Field({}, description="Optional second step of the urgent box, in the "
                                                                 "clinician's words, per language: `{en: \"...call "
                                                                 "hospital security.\"}`.")
    site_map: dict[str, str] = Field({}, description="EHR `Location/...` or `Organization/...` reference -> "
                                                      "directory site id (config/directory/README.md).")
    roles: dict[QueueRole, RoleRules] | None = Field(None, description="Who is a social worker or a program "
                                                                       "manager (README, Social work).")
    worklist: Worklist = Field(Worklist(), description="The social-work queue: `time_zone`, `coverage`, `due` "
                                                       "(`urgent`, `routine`: first-contact due times).")
    cds: Cds | None = Field(None, description="The CDS Hooks check-in card: `interval_months`, `population`, "
                                              "`clients`.")
    ehrs: dict[str, EhrEntry] = Field({}, description="EHR identity: each EHR once, with the `iss` values (and "
                                                      "`iss_patterns`) that are it; unset = each allowed `iss` is "
                                                      "its own EHR.")
    routing: Routing = Field(Routing(), description="`teams` a referral is routed to at creation (sites, "
                                                    "members, one `fallback`); unrouted referrals go to the "
                                                    "EHR's unrouted queue.")

    broadly_visible: BroadlyVisible = Field(
        BroadlyVisible(), description="IPV content where it copies forward or many see it, each off unless turned "
                                      "on: `score_observation` (the score as an Observation), `condition` "
                                      "(`problem-list-item` or `encounter-diagnosis`). Run `flask leak-check` "
                                      "before turning one on (DEPLOY.md).")
    neutral_checkin_record: bool = Field(
        False, description="After a negative screen, offer the clinician an unticked box to add one neutral line to "
                           "the chart (\"Health and safety check-in done; resources offered.\"), filed like the "
                           "referral note (its note type and confidentiality labels), nothing about the answers; "
                           "off = never offered.")
    report: Report = Field(Report(), description="The program report: `site_names` (site key -> the name shown; "
                                                 "else the referrals' own site names).")

    @property
    def headings_neutral(self) -> bool:
        """Neutral on-screen headings: as set, else on for shared screens (the default: a glance must not tell)."""
        return self.neutral_headings if self.neutral_headings is not None else self.screen_setting == "shared"

    @model_validator(mode="after")
    def _teams_name_known_ehrs(self) -> Site:
        for i, team in enumerate(self.routing.teams):
            if team.ehr is not None and self.ehrs and team.ehr not in self.ehrs:
                raise ValueError(f"routing.teams.{i}: ehr {team.ehr!r} is not in ehrs")
        return self

    @field_validator("urgent_security_step", mode="before")
    @classmethod
    def _english(cls, value: Any) -> Any:
        return {"en": value} if isinstance(value, str) else ({} if value is None else value)

    @field_validator("clinician_language")
    @classmethod
    def _whole_catalogue(cls, value: str) -> str:
        # Only a language whose catalogue is complete on the clinician's side too: any other would leave the
        # clinician's controls in English without saying so.
        allowed = clinician_codes()
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)} (config/languages.yaml: clinician: true); a "
                             "language translated for the patient only is chosen by the patient's language")
        return value

    @field_validator("handout_qr_url")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError("must be an https:// URL (a phone opens it)")
        return value

    @field_validator("cutoffs", "site_map", "ehrs", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("cutoffs", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        for key, cutoff in (value or {}).items():
            if isinstance(cutoff, bool) or not isinstance(cutoff, int | float):
                raise ValueError(f"{key}: {cutoff!r} is not a number")
        return value


class Tuning(Strict):
    """Knobs under the deployment file's ``tuning:`` block; each default suits a hospital."""

    allow_sqlite: bool = Field(False, description="Lets production start on SQLite (a one-process trial); "
                                                  "otherwise SQLite stops start-up.")
    db_pool_size: int = Field(0, ge=0, description="Database connections each app process keeps open, and as "
                                                   "many more while busy (closed after use): a request's thread "
                                                   "may hold two, its own and the access audit's. 0 = the "
                                                   "process's threads (`GUNICORN_THREADS`, else 8); DEPLOY.md "
                                                   "sizes PostgreSQL's `max_connections` from it.")
    db_prepared_statements: bool = Field(True, description="Let the driver prepare statements it runs often; off "
                                                           "behind PgBouncer in transaction mode older than 1.21 "
                                                           "(or without `max_prepared_statements`).")
    db_ping_idle_seconds: float = Field(10, ge=0, description="A pooled connection unused this long is tested "
                                                              "(`SELECT 1`) before use; 0 = at every use.")
    http_timeout_seconds: float = Field(10, gt=0, description="Deadline for the whole of each call to the EHR: "
                                                              "connect, answer and redirects (seconds).")
    ehr_request_budget_seconds: float = Field(25, ge=0, description="All calls to EHRs one page makes end by this "
                                                                    "long after the page was asked for (below "
                                                                    "gunicorn's 30 s timeout); 0 = no page-wide "
                                                                    "limit.")
    ehr_calls_per_ehr: int = Field(0, ge=0, description="Pages of an app process waiting on one EHR at once (a "
                                                        "page's parallel reads count once); more are answered at "
                                                        "once with 'the EHR is not answering'. 0 = half of "
                                                        "`ehr_calls_total`.")
    ehr_calls_total: int = Field(0, ge=0, description="Pages of an app process waiting on any EHR at once. 0 = its "
                                                      "threads (`GUNICORN_THREADS`) less two, kept for quick exit "
                                                      "and health checks.")
    discovery_ttl_seconds: int = Field(3600, ge=0, description="How long an EHR's SMART configuration is cached.")
    style_ttl_seconds: int = Field(3600, ge=0, description="How long the EHR's `smart_style_url` is cached.")
    cds_fhir_timeout_seconds: float = Field(3.0, gt=0, description="Deadline of a CDS Hooks FHIR read.")
    launch_ttl_seconds: int = Field(28800, ge=60, description="How long a launch record lives (one clinic "
                                                             "session).")
    idle_timeout_seconds: int = Field(900, ge=1, description="A launch unused this long needs a new launch from "
                                                             "the EHR (shared workstations); never longer than "
                                                             "`launch_ttl_seconds`.")
    tablet_idle_seconds: int = Field(120, ge=1, description="A clinic tablet in the patient's self-administered "
                                                            "mode left this long without a tap locks: the answers so "
                                                            "far are deleted and it returns to its idle screen.")
    tablet_pairing_seconds: int = Field(600, ge=30, description="How long the single-use code that pairs a clinic "
                                                                "tablet with a launch stays valid.")
    close_grace_seconds: int = Field(20, ge=0, description="After the last tab of a launch closes (beacon), how "
                                                           "long before the launch ends unless a page of it is used "
                                                           "again.")
    embedded_in_iframe: bool = Field(False, description="The EHR embeds the app: the session cookie becomes "
                                                        "`Secure; SameSite=None; Partitioned`.")
    session_cookie_secure: bool = Field(True, description="Send the session cookie over HTTPS only (off only for "
                                                          "the plain-HTTP demo).")
    trusted_hosts: Words = Field([], description="`Host` names the app answers (others get 400); empty = the "
                                                 "host of APP_BASE_URL in production, any host in the demo.")
    neutral_exit_url: str = Field("https://www.weather.gov/", description="Where quick exit sends the window.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Python log level (logs "
                                                                                        "never carry PHI).")
    log_format: Literal["json", "text"] = Field("json", description="`json`: one JSON object per line; `text` "
                                                                    "for a terminal.")
    instance_name: str = Field("", description="Name of this instance in audit rows and logs; empty = the host "
                                               "name.")
    directory_paths: list[str] = Field([], description="Directory sources the app serves (our YAML, HSDS 3.0 "
                                                       "JSON or CSV datapackage, FHIR bundles); empty = "
                                                       "`config/directory/boston.yaml` plus every file "
                                                       "`ipv-directory import` wrote. A broken source stops start-up "
                                                       "naming the file and the problem.")
    directory_import_dir: str = Field("", description="Where `ipv-directory import` writes; empty = "
                                                      "`instance/directory/`. Served after a restart.")
    directory_check_seconds: float = Field(30, ge=0, description="How often each app process asks the database "
                                                                 "for a newer directory import (`flask --app "
                                                                 "smart_app directory import`) and loads it without "
                                                                 "a restart; 0 = never (seconds).")
    template_cache_dir: str = Field("", description="Page templates compiled ahead (`flask --app "
                                                    "smart_app:create_build_app compile-templates`, which the image's "
                                                    "build runs), read at start instead of compiling them; empty = "
                                                    "`var/ipv-templates` in the app's Python environment "
                                                    "(`/opt/ipv/var/ipv-templates` in the image). In production it "
                                                    "is read only, and only when the app can write neither the "
                                                    "folder nor a file in it; missing = compiled at start.")
    ratelimit_launch: str = Field("60 per minute", description="Limit per client address on /launch.")
    ratelimit_callback: str = Field("60 per minute", description="Limit per client address on /callback.")
    ratelimit_actions: str = Field("120 per minute", description="Limit per client address on the social-work "
                                                                 "queue's POSTs (quick exit and the clinical pages are "
                                                                 "never limited).")
    outbox_max_attempts: int = Field(10, ge=1, description="Transient-failure tries (timeouts, 5xx, 429) per "
                                                           "chart write before its one final retry.")
    outbox_base_delay: float = Field(2.0, ge=0, description="First retry delay in seconds, doubled each try "
                                                            "(with jitter).")
    outbox_max_delay: float = Field(300.0, gt=0, description="Longest retry delay in seconds.")
    outbox_final_retry_delay: float = Field(60.0, ge=0, description="Seconds before the one final retry of a "
                                                                    "write the EHR refused.")
    outbox_lease_seconds: float = Field(120.0, gt=0, description="How long a worker holds a claimed write.")
    outbox_batch_size: int = Field(25, ge=1, description="Writes a worker claims at once.")
    outbox_link_wait_seconds: float = Field(60.0, ge=0, description="How long an optional link may hold a write "
                                                                    "while its target is retried.")
    readyz_strict: bool = Field(False, description="/readyz also fails when the worker heartbeat or the outbox "
                                                   "backlog is too old.")
    readyz_outbox_max_age: int = Field(900, ge=1, description="Seconds the oldest unsent chart write may wait "
                                                              "before /readyz reports it.")
    readyz_heartbeat_max_age: int = Field(120, ge=1, description="Seconds since the newest worker heartbeat "
                                                                 "before /readyz reports it.")
    failed_write_retention_days: int = Field(180, ge=1, description="Days a failed chart write keeps its content "
                                                                    "(for documenting by hand) after it failed; then "
                                                                    "emptied by the worker.")
    audit_retention_days: int = Field(2190, ge=1, description="Days access-audit rows are kept (6 years, HIPAA "
                                                              "§164.316(b)(2)); purged by the worker.")
    worklist_memory_days: int = Field(30, ge=0, description="Days a screen or referral is remembered for the "
                                                            "gate's notice on a later launch; 0 = not remembered.")
    followup_visit_hours: int = Field(8, ge=1, description="Hours after a positive self-administered screen "
                                                          "(clinic tablet) after which an item with no recorded "
                                                          "response counts as past the visit and reaches the "
                                                          "social-work queue; a later launch for the patient in "
                                                          "another encounter ends the visit sooner.")
    worklist_closed_retention_days: int = Field(365, ge=1, description="Days closed referrals and their contact "
                                                                       "logs are kept.")
    worklist_page_size: int = Field(50, ge=1, description="Referrals shown (and decrypted) per page of the queue.")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("directory_paths", mode="before")
    @classmethod
    def _paths(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [p.strip() for p in re.split(r"[,:]", value) if p.strip()]
        return [] if value is None else [str(p) for p in value]


class Deployment(Site):
    """One deployment file: the site's keys, and the ``tuning:`` block."""

    tuning: Tuning = Tuning()
