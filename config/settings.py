"""One typed settings model, and the one precedence rule every setting follows.

Each setting has one lower-case name and is read from at most these places, the first that sets it winning:

1. the environment (``Environment``: the few variables hospital IT sets, named as the setting in upper case);
2. the deployment file named by ``IPV_DEPLOYMENT`` (``Site`` keys at its top, ``Tuning`` under ``tuning:``);
3. the deployment's EHR profile, for the few settings it has a say in (retry, restricted note type);
4. the model's default.

``create_app(test_config)`` passes its overrides above all four (the tests and the demo), through the same model.
Unknown keys, in a file or an override, are errors naming the key and where it was read. ``resolve`` is the rule.
"""

from __future__ import annotations

import os
from collections import ChainMap
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, PrivateAttr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.deployment import DEPLOYMENTS_DIR, Deployment, Site, Tuning
from config.ehr_profile import EhrProfile
from config.files import SettingsError, Strict, read_yaml, validate

DEFAULT_DEPLOYMENT = "sandbox"  # the demo's and the tests'; production refuses to start without IPV_DEPLOYMENT
# Threads of an app process when gunicorn does not say (config/gunicorn.conf.py exports GUNICORN_THREADS, which is
# gunicorn's own, not a setting), and the threads kept free of EHR calls: quick exit and /healthz always find one.
DEFAULT_THREADS = 8
THREADS_KEPT_FROM_EHR_CALLS = 2


class EnvironmentFields(BaseModel):
    """What hospital IT sets in the environment (deploy/ipv.env.example): secrets, URLs, the database, the
    deployment file's path, proxy hops, frame ancestors, the metrics token and the rate-limit storage."""

    ipv_deployment: str = Field("", description="Deployment file: a name in config/deployments/ or a path. "
                                                "Required in production (the demo and the tests use `sandbox`).")
    ipv_mode: str = Field("production", description="`demo` or `test` say explicitly that this is the demo or a "
                                                    "test (the demo runner and the test fixtures set it); only then "
                                                    "do the start-up checks not stop the app.")
    secret_key: str = Field("", description="Flask session signing key, at least 32 random bytes. Required in "
                                                "production.")
    token_encryption_key: str = Field("", description="Fernet key(s) for tokens and PHI at rest, "
                                                      "comma-separated: the first encrypts, all decrypt (see \"Key "
                                                      "rotation\"). Required in production.")
    client_secret: str | None = Field(None, description="Client secret for `client_secret_basic` / "
                                                        "`client_secret_post` (never in the deployment file).")
    private_key_file: str | None = Field(None, description="PEM private key for private_key_jwt; replaces the "
                                                           "deployment file's `private_key_file`.")
    database_url: str = Field("sqlite:///instance/app.db", description="SQLAlchemy URL; PostgreSQL in "
                                                                       "production.")
    app_base_url: str = Field("http://127.0.0.1:5000", description="Public base URL of the app (the redirect URI "
                                                                   "is built on it).")
    trusted_proxy_hops: int = Field(0, ge=0, description="How many reverse proxies stand in front of the app; "
                                                         "their `X-Forwarded-For/-Proto/-Host/-Port/-Prefix` are "
                                                         "trusted (werkzeug `ProxyFix`). `0`: the headers are ignored. "
                                                         "Set it to exactly the number of proxies (1 for one nginx): "
                                                         "more lets a client forge its scheme or address.")
    frame_ancestors: str = Field("'self'", description="CSP frame-ancestors: the EHR origins allowed to embed "
                                                       "the app.")
    metrics_token: str = Field("", description="Bearer token Prometheus sends to read /metrics; empty = /metrics "
                                               "answers 404.")
    ratelimit_storage_uri: str = Field("memory://", description="Flask-Limiter storage: `redis://127.0.0.1:6379` in "
                                                                "production (shared by all workers), `memory://` for "
                                                                "the demo and the tests.")

    @field_validator("app_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("frame_ancestors")
    @classmethod
    def _one_pair_of_quotes_off(cls, value: str) -> str:
        # deploy/ipv.env.example double-quotes the value so a shell, python-dotenv and systemd all read it;
        # podman's --env-file keeps the quotes, which are not part of the CSP.
        stripped = value.strip()
        return stripped[1:-1] if len(stripped) > 1 and stripped[0] == stripped[-1] == '"' else value


class Environment(EnvironmentFields, BaseSettings):
    """The environment's settings. An empty variable counts as unset."""

    model_config = SettingsConfigDict(case_sensitive=False, env_ignore_empty=True, extra="ignore")


# Variables read from the environment before settings had one model, with where each went.
RETIRED_VARIABLES: dict[str, str] = {
    "IPV_DEMO": "set IPV_MODE=demo",
    "ALLOWED_ISS": "list the issuers in the deployment file's allowed_iss",
    "OUTBOUND_HOSTS": "list the hosts in the deployment file's outbound_hosts",
    "NEXT_PRIVATE_KEY_FILE": "set next_private_key_file in the deployment file",
    "NEXT_KEY_ID": "set next_key_id in the deployment file",
    "RESTRICTED_NOTE_TYPE": "set restricted_note_type in the deployment file",
    "SCREENING_DEFAULT_INSTRUMENT": "set default_instrument in the deployment file",
    "SCREENING_INSTRUMENTS": "set offered_instruments in the deployment file",
    "SCREENING_INSTRUMENT_DIRS": "set instrument_dirs in the deployment file",
    "WORKLIST_TIME_ZONE": "set worklist.time_zone in the deployment file",
    "WORKLIST_DUE_URGENT": "set worklist.due.urgent in the deployment file",
    "WORKLIST_DUE_ROUTINE": "set worklist.due.routine in the deployment file",
    "WORKLIST_URGENT_CONTACT_HOURS": "set worklist.due.urgent in the deployment file (e.g. '24 hours')",
    **{name.upper(): f"set tuning.{name} in the deployment file" for name in Tuning.model_fields},
}


class Startup(Strict):
    """How this process starts: set only by whoever calls ``create_app`` (the tests and the demo)."""

    warm_up: bool | None = Field(None, description="Warm the caches before the first request; unset = outside "
                                                   "the tests.")
    db_create_all: bool | None = Field(None, description="Create the tables without migrations; unset = in the "
                                                         "tests.")
    db_auto_upgrade: bool = Field(False, description="Run the migrations at start (the demo's own SQLite file).")


class Settings(EnvironmentFields, Site, Tuning, Startup):
    """Every setting, resolved: what product code reads (``current_settings()``), never a dict by key."""

    model_config = Strict.model_config
    deployment_name: str = Field(DEFAULT_DEPLOYMENT, description="The deployment's name (its file's stem).")
    deployment_file: str = Field("", description="The deployment file read (empty: none).")
    profile: EhrProfile = Field(description="The deployment's EHR profile, with the site's restricted note type.")
    _sources: Sources | None = PrivateAttr(None)

    @property
    def ehr_call_limits(self) -> tuple[int, int]:
        """The outbound bulkhead's bounds, (per EHR, in all): ``ehr_calls_total`` defaults to the process's threads
        less THREADS_KEPT_FROM_EHR_CALLS, ``ehr_calls_per_ehr`` to half of it (two slow EHRs at once still leave
        the rest); each at least 1 (docs/decisions/0009-ehr-deadline-and-bulkhead.md)."""
        threads = int(os.environ.get("GUNICORN_THREADS") or DEFAULT_THREADS)
        total = self.ehr_calls_total if self.ehr_calls_total > 0 else max(1, threads - THREADS_KEPT_FROM_EHR_CALLS)
        per_ehr = self.ehr_calls_per_ehr if self.ehr_calls_per_ehr > 0 else max(1, total // 2)
        return min(per_ehr, total), total

    @property
    def db_pool(self) -> tuple[int, int]:
        """The process's database pool, (kept, more while busy): ``db_pool_size`` or one per thread, and as many
        again, because a request's thread may hold two connections at once (its session and the access audit's own,
        smart_app/ops/audit.py); a pool smaller than that makes busy threads wait on each other."""
        threads = int(os.environ.get("GUNICORN_THREADS") or DEFAULT_THREADS)
        kept = self.db_pool_size if self.db_pool_size > 0 else threads
        return kept, kept

    @property
    def cookie_secure(self) -> bool:
        """Inside the EHR's frame the cookie must be Secure (SameSite=None); elsewhere as tuned."""
        return self.embedded_in_iframe or self.session_cookie_secure

    def replace(self, **overrides: Any) -> Settings:
        """These settings with ``overrides`` (upper- or lower-case setting names) on top, through the same rule
        and the same validation as ``create_app``'s."""
        if self._sources is None:
            raise RuntimeError("settings not built by load_settings")
        merged = {**self._sources.overrides, **_lower(overrides, "override")}
        sources = replace(self._sources, overrides=merged)
        if merged.get("ipv_deployment") and merged["ipv_deployment"] != self._sources.overrides.get("ipv_deployment"):
            deployment, path = read_deployment(str(merged["ipv_deployment"]))
            sources = replace(sources, deployment=deployment, deployment_file=path)
        return build(sources)

    def for_profile(self, profile: EhrProfile) -> Settings:
        """These settings as they resolve with another EHR profile (an outbox row written under it)."""
        if profile.ref == self.profile.ref or self._sources is None:
            return self
        return build(self._sources, profile)


# -- reading the sources -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sources:
    """What ``build`` resolves: each layer a flat mapping of setting name -> value, only what it sets."""

    overrides: dict[str, Any] = field(default_factory=dict)
    environment: dict[str, Any] = field(default_factory=dict)
    deployment: dict[str, Any] = field(default_factory=dict)
    deployment_file: Path | None = None


FLAT_NAMES = frozenset(Settings.model_fields) - {"profile", "deployment_file"}


def resolve(*layers: Mapping[str, Any]) -> dict[str, Any]:
    """The precedence rule, for every setting: the first layer that sets it wins. Layers come highest first
    (overrides, environment, deployment file, EHR profile); a setting no layer sets keeps the model's default."""
    return dict(ChainMap(*layers))


def load_settings(overrides: Mapping[str, Any] | None = None) -> Settings:
    """Read the environment, the deployment file and its EHR profile, and resolve every setting.

    Raises SettingsError naming each problem (unknown or malformed key and its file, a retired environment
    variable, a missing file)."""
    lowered = _lower(overrides or {}, "override")
    environment = read_environment()
    name = lowered.get("ipv_deployment") or environment.get("ipv_deployment") or DEFAULT_DEPLOYMENT
    deployment, path = read_deployment(str(name))
    return build(Sources(lowered, environment, deployment, path))


def read_environment() -> dict[str, Any]:
    """The settings the environment sets; SettingsError for a malformed value or a variable no longer read."""
    found = [f"{var} (environment): no longer read from the environment: {hint}"
             for var, hint in RETIRED_VARIABLES.items() if os.environ.get(var, "").strip()]
    if found:
        raise SettingsError(found)
    try:
        env = Environment()
    except ValidationError as exc:
        raise SettingsError([f"{'.'.join(map(str, e['loc'])).upper()} (environment): {e['msg']}"
                             for e in exc.errors(include_url=False)]) from None
    return {k: getattr(env, k) for k in env.model_fields_set}


def deployment_path(name_or_path: str) -> Path:
    path = Path(name_or_path)
    return DEPLOYMENTS_DIR / f"{name_or_path}.yaml" if not path.suffix and "/" not in name_or_path else path


def read_deployment(name_or_path: str) -> tuple[dict[str, Any], Path]:
    """The settings a deployment file sets, flat (its ``tuning:`` keys beside its own), paths made absolute."""
    path = deployment_path(name_or_path)
    raw = read_yaml(path, "deployment")
    deployment = validate(Deployment, raw, str(path))
    values = deployment.model_dump(exclude_unset=True, exclude={"tuning"})
    values.update(deployment.tuning.model_dump(exclude_unset=True))
    for key in ("private_key_file", "next_private_key_file"):
        if values.get(key) and not Path(values[key]).is_absolute():
            values[key] = str((path.parent / values[key]).resolve())
    profile = str(values.get("ehr_profile") or "")
    if ("/" in profile or profile.endswith((".yaml", ".yml"))) and not Path(profile).is_absolute():
        values["ehr_profile"] = str((path.parent / profile).resolve())
    return values, path.resolve()


def profile_layer(profile: EhrProfile) -> dict[str, Any]:
    """What an EHR profile has a say in, by setting name."""
    layer: dict[str, Any] = {"outbox_max_attempts": profile.retry.max_attempts,
                             "outbox_base_delay": profile.retry.base_delay,
                             "outbox_max_delay": profile.retry.max_delay}
    if profile.restricted_note_type is not None:
        layer["restricted_note_type"] = profile.restricted_note_type
    return layer


def build(sources: Sources, profile: EhrProfile | None = None) -> Settings:
    """Resolve ``sources`` (with the EHR profile they name, or ``profile``) into validated settings."""
    above_profile = resolve(sources.overrides, sources.environment, sources.deployment)
    if profile is None:
        name = str(above_profile.get("ehr_profile") or Site.model_fields["ehr_profile"].default)
        profile = EhrProfile.load(name, base=sources.deployment_file.parent if sources.deployment_file else None)
    values = resolve(above_profile, profile_layer(profile))
    if sources.deployment_file is not None:
        values.setdefault("deployment_name", sources.deployment_file.stem)
    values["deployment_file"] = str(sources.deployment_file or "")
    settings = validate(Settings, {**values, "profile": profile}, _where(sources))
    # The note's type is the site's where it has one (deployment over profile, as every setting).
    settings = settings.model_copy(update={"profile": profile.with_restricted_note_type(
        settings.restricted_note_type)})
    settings._sources = sources
    return settings


def _where(sources: Sources) -> str:
    return f"settings (overrides, environment, {sources.deployment_file or 'no deployment file'})"


def _lower(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Setting names as the model spells them; SettingsError for a name that is no setting."""
    out = {str(k).lower(): v for k, v in values.items()}
    unknown = sorted(k for k in out if k not in FLAT_NAMES)
    if unknown:
        raise SettingsError([f"{source}: {k.upper()}: unknown setting" for k in unknown])
    return out
