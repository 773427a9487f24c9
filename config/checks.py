"""Fail-closed start-up checks: every way a production start could run with demo or unsafe settings.

``check_config(settings)`` looks at the resolved settings (config/settings.py) and returns every problem at once
(errors stop a production start; warnings are printed and logged). Outside the demo and the tests (which say so
explicitly: Flask's ``TESTING``, or ``IPV_MODE=test|demo``) an error stops start-up, and
``flask --app smart_app check-config`` prints the same list. It also checks the deployment against its EHR
profile: what the site turns on must be what the EHR can do.

Nothing here talks to the network; ``smart_app/ops/config_check.py`` adds the ``--online`` discovery check.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import serialization

from config.access import cannot_read, cannot_write_folder
from config.ehr_profile import ProfileError
from config.ehrs import EhrIdentityError, ehrs_of
from config.settings import Settings

MODES = ("production", "demo", "test")

# SHA-256 of the DER SubjectPublicKeyInfo of the sandbox EHR's public demo keys (sandbox_ehr/keys/*-public.pem;
# tests/test_fail_closed.py recomputes them). A copy of those keys anywhere is still refused: the private
# halves are public in the repository.
SANDBOX_KEY_FINGERPRINTS = {
    "a58b7c433d15e4faacc3fd740d237197d79715f7eff25ce8b42629f33335aa58",  # rs384
    "41033767117a38067fad9384173dae1680ee67ada8b1f815d10dac0a13adcf2e",  # es384
}
# Client secrets registered in sandbox_ehr/clients.yaml (public in the repository).
SANDBOX_SECRETS = {"sandbox-secret-not-for-production"}
# How example deployment files mark what a site must fill in.
PLACEHOLDER_MARKERS = ("REPLACE", "CHANGE-ME", "CHANGEME", "EXAMPLE", "<", "TODO")
MIN_SECRET_KEY_BYTES = 32
MIN_METRICS_TOKEN_CHARS = 32
# Proxies in front of the app that the shipped set-ups have (nginx, or a load balancer and nginx): more trusted
# hops let a client forge its address and scheme through X-Forwarded-*.
MAX_TRUSTED_PROXY_HOPS = 2
MEMORY_STORAGE = "memory://"
METRICS_FOLDER = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class Problem:
    level: str  # "error" stops a production start; "warning" is reported only
    setting: str  # the setting's name, or "" when the message names it (a file's key)
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper()}: {self.setting}: {self.message}" if self.setting else \
            f"{self.level.upper()}: {self.message}"


def run_mode(settings: Settings, testing: bool = False) -> str:
    """production unless the tests or the demo say explicitly that they are the tests or the demo."""
    if testing:
        return "test"
    mode = settings.ipv_mode.strip().lower()
    return mode if mode in MODES else "production"


class _Found:
    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def error(self, setting: str, message: str) -> None:
        self.problems.append(Problem("error", setting, message))

    def warning(self, setting: str, message: str) -> None:
        self.problems.append(Problem("warning", setting, message))


def check_config(settings: Settings) -> list[Problem]:
    """Every problem with these settings for a production start (empty list: fine)."""
    found = _Found()
    mode = settings.ipv_mode.strip().lower()
    if mode not in MODES:
        found.error("IPV_MODE", f"unknown mode {mode!r} (production, demo or test)")
    if not settings.ipv_deployment:
        found.error("IPV_DEPLOYMENT", "not set: name this site's deployment file explicitly (the sandbox one is "
                                      "for the demo and the tests only)")
    else:
        _check_deployment(settings, found)
    _check_profile(settings, found)
    _check_secrets(settings, found)
    _check_database(settings, found)
    _check_base_url(settings, found)
    _check_cookies_and_frames(settings, found)
    _check_hosts_and_proxies(settings, found)
    _check_shared_secrets(settings, found)
    _check_processes(settings, found)
    metrics_folder = metrics_folder_problem()
    if metrics_folder:
        found.error(METRICS_FOLDER, metrics_folder)
    return found.problems


def metrics_folder_problem() -> str | None:
    """Why this process cannot keep its Prometheus counters in ``PROMETHEUS_MULTIPROC_DIR`` (None: it can, or it
    is not set). Every request counts itself there, so an unwritable folder would fail every request."""
    folder = os.environ.get(METRICS_FOLDER)
    if not folder:
        return None
    why = cannot_write_folder(Path(folder))
    return f"{why}: every request counts itself there (DEPLOY.md, \"Containers\": the tmpfs volume's uid)" \
        if why else None


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.level == "error"]


def _placeholder(value: str) -> bool:
    upper = value.upper()
    return any(marker in upper for marker in PLACEHOLDER_MARKERS)


def _check_deployment(s: Settings, found: _Found) -> None:
    if s.deployment_name == "sandbox" or Path(s.ipv_deployment).stem == "sandbox":
        found.error("IPV_DEPLOYMENT", "the deployment named 'sandbox' is the bundled test EHR's: its keys are public")
    if not s.client_id or _placeholder(s.client_id):
        found.error("client_id", f"{s.client_id!r} is a placeholder: put the client id the EHR registered")
    if not s.allowed_iss:
        found.error("allowed_iss", "no EHR is allowed to launch the app (allowed_iss empty)")
    for iss in s.allowed_iss:
        if urlsplit(iss).scheme != "https":
            found.error("allowed_iss", f"{iss} is not https: an EHR's FHIR base is reached over TLS only")
        if _placeholder(iss):
            found.error("allowed_iss", f"{iss} is a placeholder")
    _check_ehrs(s, found)
    if s.client_auth in ("client_secret_basic", "client_secret_post"):
        if not s.client_secret:
            found.error("CLIENT_SECRET", f"client_auth {s.client_auth} needs CLIENT_SECRET")
        elif s.client_secret in SANDBOX_SECRETS or "not-for-production" in s.client_secret:
            found.error("CLIENT_SECRET", "is the sandbox EHR's public client secret")
    if s.client_auth == "private_key_jwt" or s.private_key_file:
        _check_private_key(s.private_key_file, found)


def _check_ehrs(s: Settings, found: _Found) -> None:
    """The ehrs block parses (config/ehrs.py: one * per pattern, as a whole path segment, never in the host),
    every value and pattern in it is https, and every allow-listed iss belongs to one of its EHRs."""
    try:
        ehrs = ehrs_of(s)
    except EhrIdentityError as exc:
        found.error("ehrs", str(exc))
        return
    if not s.ehrs:
        return
    for ehr in ehrs:
        for value in [*sorted(ehr.iss), *(p.text for p in ehr.patterns)]:
            if urlsplit(value).scheme != "https":
                found.error("ehrs", f"{ehr.id}: {value} is not https: an EHR's FHIR base is reached over TLS only")
    for iss in s.allowed_iss:
        if not any(ehr.owns(iss) for ehr in ehrs):
            found.warning("ehrs", f"{iss} is allow-listed but in no ehrs entry: its launches count as an EHR of their "
                                  "own, and a standalone launch on it is refused")


def _check_profile(s: Settings, found: _Found) -> None:
    """What the deployment turns on against what its EHR profile says the EHR can do."""
    deployment, profile = s.deployment_file or "the deployment", s.profile.ref
    try:
        s.profile.check_startup()
    except ProfileError as exc:
        found.error("ehr_profile", str(exc))
    asked = [name for name in ("scopes_ehr", "scopes_standalone") if "online_access" in getattr(s, name).split()]
    if asked and not s.profile.online_access:
        found.error("online_access", f"{deployment} asks for online_access ({', '.join(asked)}) but the EHR profile "
                                     f"{profile} says the EHR gives no refresh tokens (online_access: false)")
    if s.profile.online_access and "online_access" not in s.scopes_ehr.split():
        found.warning("online_access", f"{deployment} asks for no online_access in scopes_ehr although the EHR "
                                       f"profile {profile} says the EHR gives refresh tokens: a chart write after "
                                       "the launch's token expires fails (add online_access to scopes_ehr)")
    if s.backend_services is not None:
        if s.profile.backend_services == "false":
            found.error("backend_services", f"{deployment} turns on backend_services but the EHR profile {profile} "
                                            "says the EHR takes no system writes (backend_services: false)")
        if s.client_auth != "private_key_jwt":
            found.error("backend_services", f"{deployment} turns on backend_services, which authenticate with "
                                            f"private_key_jwt, but its client_auth is {s.client_auth}")
    _check_broadly_visible(s, found)
    missing = [scope for scope in s.profile.scopes if scope not in s.scopes_ehr.split()]
    if missing:
        found.warning("scopes_ehr", f"{deployment} does not ask for {' '.join(missing)}, which the EHR profile "
                                    f"{profile} names for the chart write: the note will not be offered")


def _check_broadly_visible(s: Settings, found: _Found) -> None:
    """A deployment that writes IPV content where it copies forward or many see it says so at every start."""
    for kind in s.broadly_visible.kinds():
        where = {"Observation": "the screening score as an Observation (a flowsheet or results row)",
                 "Condition": f"a Condition ({s.broadly_visible.condition}) on the patient's chart"}[kind]
        if kind not in s.profile.offered:
            found.warning("broadly_visible", f"turns on {where}, but the EHR profile {s.profile.ref} does not take "
                                             f"{kind} from apps: nothing is written")
            continue
        found.warning("broadly_visible", f"writes {where}: it copies forward into summaries and other charts and "
                                         "may reach the patient portal and proxies; run `flask leak-check` with the "
                                         "site's test patient before go-live (DEPLOY.md)")


def _check_private_key(key_file: str | None, found: _Found) -> None:
    path = Path(key_file) if key_file else None
    if path is None:
        found.error("PRIVATE_KEY_FILE", "client_auth private_key_jwt needs private_key_file or PRIVATE_KEY_FILE")
        return
    if "sandbox_ehr" in path.parts:
        found.error("PRIVATE_KEY_FILE", f"{path} is a sandbox EHR key (public in the repository)")
        return
    unreadable = cannot_read(path)
    if unreadable:
        found.error("PRIVATE_KEY_FILE", f"key file {path}: {unreadable}")
        return
    if not path.is_file():
        found.error("PRIVATE_KEY_FILE", f"key file {path} does not exist or cannot be read")
        return
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    except (OSError, ValueError, TypeError) as exc:
        found.error("PRIVATE_KEY_FILE", f"{path} is not an unencrypted PEM private key ({type(exc).__name__})")
        return
    if hashlib.sha256(spki).hexdigest() in SANDBOX_KEY_FINGERPRINTS:
        found.error("PRIVATE_KEY_FILE", f"{path} holds a sandbox EHR key (public in the repository)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        found.error("PRIVATE_KEY_FILE", f"{path} is readable or writable by every user on the host (mode "
                                        f"{mode:04o}): chmod 0600, or 0640 with the app's group")
    elif mode & stat.S_IWGRP:
        found.error("PRIVATE_KEY_FILE", f"{path} is writable by its group (mode {mode:04o}): chmod 0600, or 0640 "
                                        "with the app's group")
    elif mode & stat.S_IRGRP and path.stat().st_gid not in {os.getegid(), *os.getgroups()}:
        # DEPLOY.md's root:ipv 0640 lets the app read the key through its own group; any other group is someone else.
        found.warning("PRIVATE_KEY_FILE", f"{path} is readable by group {path.stat().st_gid}, which this process is "
                                          "not in: chown it to the app's group, or chmod 0600")


def _check_secrets(s: Settings, found: _Found) -> None:
    size = len(s.secret_key.encode())
    if size < MIN_SECRET_KEY_BYTES:
        found.error("SECRET_KEY", f"{'not set' if not size else f'{size} bytes'}: needs at least "
                                  f"{MIN_SECRET_KEY_BYTES} random bytes (python -c 'import secrets; "
                                  "print(secrets.token_urlsafe(48))')")
    keys = [k.strip() for k in s.token_encryption_key.split(",") if k.strip()]
    if not keys:
        found.error("TOKEN_ENCRYPTION_KEY", "not set: a Fernet key encrypts tokens and PHI at rest")
    for n, key in enumerate(keys, 1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            found.error("TOKEN_ENCRYPTION_KEY", f"key {n} is not a Fernet key (32 url-safe base64-encoded bytes)")


def _check_database(s: Settings, found: _Found) -> None:
    if s.database_url.startswith("sqlite") and not s.allow_sqlite:
        found.error("DATABASE_URL", f"{s.database_url or '(unset)'} is SQLite: use PostgreSQL (several processes "
                                    "share it), or set tuning.allow_sqlite for a single-process trial")


def _check_base_url(s: Settings, found: _Found) -> None:
    parts = urlsplit(s.app_base_url)
    if parts.scheme != "https" or not parts.hostname:
        found.error("APP_BASE_URL", f"{s.app_base_url or '(unset)'} is not an https:// URL: the EHR redirects to "
                                    "APP_BASE_URL/callback and the session cookie is Secure")


def _check_cookies_and_frames(s: Settings, found: _Found) -> None:
    if not s.cookie_secure:
        found.error("tuning.session_cookie_secure", "is off: the session cookie would travel over plain HTTP")
    wide = [source for source in s.frame_ancestors.split() if "*" in source or source in ("http:", "https:")]
    if wide:
        found.error("FRAME_ANCESTORS", f"{' '.join(wide)} lets any site frame the app: name the EHR origins only")
    if not s.embedded_in_iframe:
        return
    ancestors = s.frame_ancestors.split()
    origins = {_origin(iss) for iss in s.allowed_iss}
    if not [o for o in origins if o in ancestors]:
        found.warning("FRAME_ANCESTORS", f"tuning.embedded_in_iframe is on but FRAME_ANCESTORS "
                                         f"({' '.join(ancestors) or 'empty'}) names no EHR origin "
                                         f"({', '.join(sorted(origins)) or 'none'}): the EHR's frame will stay "
                                         "blank unless its page is served from another origin you listed")


def _check_hosts_and_proxies(s: Settings, found: _Found) -> None:
    if any("*" in host for host in s.trusted_hosts):
        found.error("tuning.trusted_hosts", f"{' '.join(s.trusted_hosts)}: a wildcard answers any Host, so links "
                                            "and redirects can be built on a forged host: name the public host")
    if not 0 <= s.trusted_proxy_hops <= MAX_TRUSTED_PROXY_HOPS:
        found.error("TRUSTED_PROXY_HOPS", f"{s.trusted_proxy_hops}: must be the number of proxies in front of the "
                                          f"app, 0 to {MAX_TRUSTED_PROXY_HOPS}; more lets a client forge its "
                                          "address and scheme")


def _check_shared_secrets(s: Settings, found: _Found) -> None:
    fernet_keys = {k.strip() for k in s.token_encryption_key.split(",") if k.strip()}
    if s.secret_key and s.secret_key in fernet_keys:
        found.error("SECRET_KEY", "is the same as TOKEN_ENCRYPTION_KEY: use two different random keys")
    token = s.metrics_token
    if not token:
        return
    if len(token) < MIN_METRICS_TOKEN_CHARS:
        found.error("METRICS_TOKEN", f"{len(token)} characters: needs at least {MIN_METRICS_TOKEN_CHARS} "
                                     "random characters, or leave it empty to turn /metrics off")
    others = {"SECRET_KEY": {s.secret_key}, "TOKEN_ENCRYPTION_KEY": fernet_keys, "CLIENT_SECRET": {s.client_secret}}
    for name, values in others.items():
        if token in values:
            found.error("METRICS_TOKEN", f"is the same as {name}: whoever scrapes /metrics would hold {name}")


def _check_processes(s: Settings, found: _Found) -> None:
    if s.client_auth == "none":
        found.warning("client_auth", "is none: the app does not prove who it is to the EHR's token endpoint; use "
                                     "private_key_jwt where the EHR offers it")
    bind = os.environ.get("GUNICORN_BIND", "").strip()
    if s.ipv_mode.strip().lower() == "demo" and bind and not _loopback(_parse_bind(bind)):
        found.error("IPV_MODE", f"demo on {bind} (GUNICORN_BIND): the demo runs with public sandbox keys and "
                                "relaxed checks, so it binds only a loopback address or a unix socket")
    if s.ratelimit_storage_uri.strip().startswith(MEMORY_STORAGE):
        workers = os.environ.get("GUNICORN_WORKERS", "").strip()
        if workers.isdigit() and int(workers) > 1:
            found.error("RATELIMIT_STORAGE_URI", f"memory:// with {workers} workers: each worker counts alone, so "
                                                 "every limit is multiplied; use redis://")
        else:
            found.warning("RATELIMIT_STORAGE_URI", "memory:// counts per process: with more than one gunicorn "
                                                   "worker or instance every limit is multiplied; use redis://")


def serving_problems(mode: str, ratelimit_storage_uri: str, workers: int,
                     addresses: list[str | int | tuple[str, int]]) -> list[Problem]:
    """What gunicorn's own settings add (config/gunicorn.conf.py checks them once the bind and the worker count
    are final): the demo's relaxed checks never on an address other hosts reach, memory:// never shared by
    several workers in production."""
    found = _Found()
    mode = mode.strip().lower()
    open_to = [a for a in addresses if not _loopback(a)]
    if mode == "demo" and open_to:
        found.error("IPV_MODE", f"demo on {', '.join(map(_address, open_to))}: the demo runs with public sandbox "
                                "keys and relaxed checks, so it binds only a loopback address or a unix socket")
    if mode not in ("demo", "test") and ratelimit_storage_uri.strip().startswith(MEMORY_STORAGE) and workers > 1:
        found.error("RATELIMIT_STORAGE_URI", f"memory:// with {workers} workers: each worker counts alone, so "
                                             "every limit is multiplied; use redis://")
    return found.problems


def _parse_bind(bind: str) -> str | tuple[str, int]:
    """gunicorn's bind syntax, as far as loopback or not goes: unix:PATH, fd://N, HOST:PORT, [V6]:PORT."""
    if bind.startswith(("unix:", "fd://")):
        return bind
    host, _, port = bind.rpartition(":")
    return (host or bind, int(port) if port.isdigit() else 0)


def _loopback(address: str | int | tuple[str, int]) -> bool:
    if not isinstance(address, tuple):
        return True  # a unix socket, or a descriptor (fd://) its caller bound and chose
    host = address[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _address(address: str | int | tuple[str, int]) -> str:
    return f"{address[0] or '*'}:{address[1]}" if isinstance(address, tuple) else str(address)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
