"""Fail-closed start-up checks: every way a production start could run with demo or unsafe settings.

``check_config(config)`` looks at the Flask config that ``config.settings.flask_config()`` built and returns
every problem at once (errors stop a production start; warnings are printed and logged). Outside the demo and
the tests (which say so explicitly: ``TESTING``, ``DEMO`` or ``IPV_MODE=test|demo``) an error stops start-up,
and ``flask --app smart_app check-config`` prints the same list.

Nothing here talks to the network; ``smart_app/ops/config_check.py`` adds the ``--online`` discovery check.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from config.ehrs import EhrIdentityError, ehrs_of

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


@dataclass(frozen=True)
class Problem:
    level: str  # "error" stops a production start; "warning" is reported only
    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper()}: {self.setting}: {self.message}"


def run_mode(config: Mapping[str, Any]) -> str:
    """production unless the tests or the demo say explicitly that they are the tests or the demo."""
    if config.get("TESTING"):
        return "test"
    if config.get("DEMO"):
        return "demo"
    mode = str(config.get("IPV_MODE") or "production").strip().lower()
    return mode if mode in MODES else "production"


def check_config(config: Mapping[str, Any]) -> list[Problem]:
    """Every problem with this configuration for a production start (empty list: fine)."""
    problems: list[Problem] = []

    def error(setting: str, message: str) -> None:
        problems.append(Problem("error", setting, message))

    def warning(setting: str, message: str) -> None:
        problems.append(Problem("warning", setting, message))

    mode = str(config.get("IPV_MODE") or "production").strip().lower()
    if mode not in MODES:
        error("IPV_MODE", f"unknown mode {mode!r} (production, demo or test)")

    deployment = config.get("DEPLOYMENT")
    if not config.get("IPV_DEPLOYMENT"):
        error("IPV_DEPLOYMENT", "not set: name this site's deployment file explicitly (the sandbox one is for "
                                "the demo and the tests only)")
    elif config.get("DEPLOYMENT_ERROR"):
        error("IPV_DEPLOYMENT", str(config["DEPLOYMENT_ERROR"]))
    elif deployment is not None:
        _check_deployment(deployment, config, error, warning)

    _check_secrets(config, error)
    _check_database(config, error)
    _check_base_url(config, error)
    _check_cookies_and_frames(config, deployment, error, warning)
    return problems


def errors(problems: list[Problem]) -> list[Problem]:
    return [p for p in problems if p.level == "error"]


def _placeholder(value: str) -> bool:
    upper = value.upper()
    return any(marker in upper for marker in PLACEHOLDER_MARKERS)


def _check_deployment(dep: Any, config: Mapping[str, Any], error: Any, warning: Any) -> None:
    if dep.name == "sandbox" or Path(str(config["IPV_DEPLOYMENT"])).stem == "sandbox":
        error("IPV_DEPLOYMENT", "the deployment named 'sandbox' is the bundled test EHR's: its keys are public")
    if not dep.client_id or _placeholder(dep.client_id):
        error("client_id", f"{dep.client_id!r} is a placeholder: put the client id the EHR registered")
    allowed = list(config.get("ALLOWED_ISS") or [])
    if not allowed:
        error("allowed_iss", "no EHR is allowed to launch the app (allowed_iss / ALLOWED_ISS empty)")
    for iss in allowed:
        if urlsplit(iss).scheme != "https":
            error("allowed_iss", f"{iss} is not https: an EHR's FHIR base is reached over TLS only")
        if _placeholder(iss):
            error("allowed_iss", f"{iss} is a placeholder")
    _check_ehrs(dep, error, warning)
    if dep.client_auth in ("client_secret_basic", "client_secret_post"):
        if not dep.client_secret:
            error("CLIENT_SECRET", f"client_auth {dep.client_auth} needs CLIENT_SECRET")
        elif dep.client_secret in SANDBOX_SECRETS or "not-for-production" in dep.client_secret:
            error("CLIENT_SECRET", "is the sandbox EHR's public client secret")
    if dep.client_auth == "private_key_jwt" or dep.private_key_file:
        _check_private_key(dep, error)


def _check_ehrs(dep: Any, error: Any, warning: Any) -> None:
    """The ehrs block parses (config/ehrs.py: one * per pattern, as a whole path segment, never in the host),
    every value and pattern in it is https, and every allow-listed iss belongs to one of its EHRs."""
    try:
        ehrs = ehrs_of(dep)
    except EhrIdentityError as exc:
        error("ehrs", str(exc))
        return
    if not (dep.extra or {}).get("ehrs"):
        return
    for ehr in ehrs:
        for value in [*sorted(ehr.iss), *(p.text for p in ehr.patterns)]:
            if urlsplit(value).scheme != "https":
                error("ehrs", f"{ehr.id}: {value} is not https: an EHR's FHIR base is reached over TLS only")
    for iss in dep.allowed_iss or []:
        if not any(ehr.owns(iss) for ehr in ehrs):
            warning("ehrs", f"{iss} is allow-listed but in no ehrs entry: its launches count as an EHR of their own, "
                            "and a standalone launch on it is refused")


def _check_private_key(dep: Any, error: Any) -> None:
    path = Path(dep.private_key_file) if dep.private_key_file else None
    if path is None:
        error("PRIVATE_KEY_FILE", "client_auth private_key_jwt needs private_key_file or PRIVATE_KEY_FILE")
        return
    if "sandbox_ehr" in path.parts:
        error("PRIVATE_KEY_FILE", f"{path} is a sandbox EHR key (public in the repository)")
        return
    if not path.is_file():
        error("PRIVATE_KEY_FILE", f"key file {path} does not exist or cannot be read")
        return
    try:
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        spki = key.public_key().public_bytes(serialization.Encoding.DER,
                                             serialization.PublicFormat.SubjectPublicKeyInfo)
    except (OSError, ValueError, TypeError) as exc:
        error("PRIVATE_KEY_FILE", f"{path} is not an unencrypted PEM private key ({type(exc).__name__})")
        return
    if hashlib.sha256(spki).hexdigest() in SANDBOX_KEY_FINGERPRINTS:
        error("PRIVATE_KEY_FILE", f"{path} holds a sandbox EHR key (public in the repository)")


def _check_secrets(config: Mapping[str, Any], error: Any) -> None:
    secret = config.get("SECRET_KEY") or ""
    size = len(secret.encode() if isinstance(secret, str) else secret)
    if size < MIN_SECRET_KEY_BYTES:
        error("SECRET_KEY", f"{'not set' if not size else f'{size} bytes'}: needs at least "
                            f"{MIN_SECRET_KEY_BYTES} random bytes (python -c 'import secrets; "
                            "print(secrets.token_urlsafe(48))')")
    keys = [k.strip() for k in str(config.get("TOKEN_ENCRYPTION_KEY") or "").split(",") if k.strip()]
    if not keys:
        error("TOKEN_ENCRYPTION_KEY", "not set: a Fernet key encrypts tokens and PHI at rest")
    from cryptography.fernet import Fernet

    for n, key in enumerate(keys, 1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            error("TOKEN_ENCRYPTION_KEY", f"key {n} is not a Fernet key (32 url-safe base64-encoded bytes)")


def _check_database(config: Mapping[str, Any], error: Any) -> None:
    url = str(config.get("DATABASE_URL") or "")
    if url.startswith("sqlite") and not config.get("ALLOW_SQLITE"):
        error("DATABASE_URL", f"{url or '(unset)'} is SQLite: use PostgreSQL (several processes share it), or "
                              "set ALLOW_SQLITE=1 for a single-process trial")


def _check_base_url(config: Mapping[str, Any], error: Any) -> None:
    base = str(config.get("APP_BASE_URL") or "")
    parts = urlsplit(base)
    if parts.scheme != "https" or not parts.hostname:
        error("APP_BASE_URL", f"{base or '(unset)'} is not an https:// URL: the EHR redirects to "
                              "APP_BASE_URL/callback and the session cookie is Secure")


def _check_cookies_and_frames(config: Mapping[str, Any], dep: Any, error: Any, warning: Any) -> None:
    if not config.get("SESSION_COOKIE_SECURE"):
        error("SESSION_COOKIE_SECURE", "is off: the session cookie would travel over plain HTTP")
    if not config.get("EMBEDDED_IN_IFRAME"):
        return
    ancestors = str(config.get("FRAME_ANCESTORS") or "").split()
    origins = {_origin(iss) for iss in config.get("ALLOWED_ISS") or []}
    named = [o for o in origins if o in ancestors]
    if not named:
        warning("FRAME_ANCESTORS", f"EMBEDDED_IN_IFRAME=1 but FRAME_ANCESTORS ({' '.join(ancestors) or 'empty'}) "
                                   f"names no EHR origin ({', '.join(sorted(origins)) or 'none'}): the EHR's "
                                   "frame will stay blank unless its page is served from another origin you listed")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
