"""The app's side of talking to an EHR: one outbound HTTP session, the discovery cache,
client authentication from the deployment, and an authenticated FHIR client per launch
(refreshing an expired access token when the EHR gave a refresh token).

A refresh holds a lock on the launch's database row from reading the refresh token to storing the new one, so one
refresh per launch reaches the EHR however many processes (web instances, the outbox worker) want it at once; the
others wait, re-read the row and use the token it now holds. Many EHRs rotate refresh tokens (single use): a second
refresh with the same token would revoke the grant.

Every call through the session is held to a deadline on the whole call (``tuning.http_timeout_seconds``) and
to the deadline of the page it serves (``tuning.ehr_request_budget_seconds``), and a bulkhead bounds the calls in
flight per EHR identity and in all (``tuning.ehr_calls_per_ehr``, ``tuning.ehr_calls_total``): a slow EHR answers
its own launches with "the EHR is not answering", while quick exit, health and other EHRs keep their threads. The
sizes are chosen in docs/decisions/0009-ehr-deadline-and-bulkhead.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import requests
from flask import Flask, current_app, g
from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from config.current import current_settings, settings_of
from config.ehrs import allowed_origins, ehr_id_for, ehrs_of, launch_allowed
from fhir.client import FhirClient
from fhir.http import (
    Bulkhead,
    BulkheadLimits,
    OutboundSession,
    RequestScope,
    add_header_provider,
    enter_request_scope,
    exit_request_scope,
)
from fhir.smart.client_auth import ClientAuth, load_private_key
from fhir.smart.discovery import DiscoveryCache, DiscoveryError, SmartConfiguration
from fhir.smart.id_token import prefetch_jwks
from fhir.smart.oauth import TokenError, client_credentials, refresh, token_expired
from fhir.smart.style import cached_style
from fhir.smart.ttl_cache import RefreshingCache
from fhir.url_policy import OutboundPolicy, enforce, origin_of
from smart_app.ops.errors import LaunchError
from smart_app.ops.observability import request_id_header
from smart_app.store.crypto import decrypt_json
from smart_app.store.db import close_pooled_connections, get_session, session_scope
from smart_app.store.models import LaunchRecord, UsedJti

log = logging.getLogger(__name__)
STYLE_CACHE_ENTRIES = 64  # style files kept: one or two per EHR in practice
warmup_log = logging.getLogger("ipv.warmup")


def outbound_policy() -> OutboundPolicy:
    """Hosts the app may call: the allow-listed issuers' origins plus the deployment's explicit
    ``outbound_hosts``; plain http and local ports only for the bundled sandbox deployment."""
    settings = current_settings()
    sandbox = settings.deployment_name == "sandbox"
    # The CDS Hooks clients the deployment lists: their JWKS and FHIR servers are named explicitly too.
    listed: list[str] = []
    for client in settings.cds.clients if settings.cds else []:
        listed += [*client.jwks_url, *client.fhir_servers]
    # The ehrs block's iss values and patterns: their fixed origins (a pattern never widens the host).
    return OutboundPolicy(iss_list=[*settings.allowed_iss, *allowed_origins(settings)],
                          extra=[*settings.outbound_hosts, *listed],
                          allow_http=sandbox, allow_loopback=sandbox)


def ehr_key(owners: tuple[tuple[str, str], ...], url: str) -> str:
    """The bulkhead key of an outbound URL: the EHR identity (``ehrs`` in the deployment, else the iss) of the
    longest allow-listed iss the URL sits under, else of an iss on the URL's origin (an EHR's token endpoint),
    else the URL's origin itself (an authorization server on a host of its own)."""
    for iss, ehr in owners:
        if url == iss or url.startswith(iss + "/") or url.startswith(iss + "?"):
            return ehr
    origin = origin_of(url)
    for iss, ehr in owners:
        if origin is not None and origin_of(iss) == origin:
            return ehr
    return f"{origin[0]}://{origin[1]}:{origin[2]}" if origin else "?"


def _key_for_config() -> Callable[[str], str]:
    """``ehr_key`` over the allow-listed iss values, each EHR's own, and the origins of its iss patterns (a
    per-launch iss is never listed one by one: its launcher's origin stands for it)."""
    settings = current_settings()
    owners = {iss.rstrip("/"): ehr_id_for(iss, settings) for iss in settings.allowed_iss}
    for ehr in ehrs_of(settings):
        owners.update({iss: ehr.id for iss in ehr.iss})
        owners.update({pattern.origin: ehr.id for pattern in ehr.patterns})
    return partial(ehr_key, tuple(sorted(owners.items(), key=lambda pair: -len(pair[0]))))


def bulkhead_limits() -> BulkheadLimits:
    per_ehr, total = current_settings().ehr_call_limits
    return BulkheadLimits(per_ehr=per_ehr, total=total)


def http_session() -> requests.Session:
    """The app's one outbound session (connection reuse; the single place every EHR call goes through),
    every transport behind the outbound URL policy and the bulkhead (both re-read from the config at each use)."""
    ext = current_app.extensions
    if "smart_http" not in ext:
        session = OutboundSession()
        session.headers["User-Agent"] = "ipv-smart-screen"
        ext["smart_bulkhead"] = Bulkhead(_key_for_config(), bulkhead_limits)
        add_header_provider(session, request_id_header, ext["smart_bulkhead"])  # X-Request-ID on every call
        ext["smart_http"] = session
    policy, key_for, limits = _rules()
    bulkhead = ext.get("smart_bulkhead")
    if bulkhead is not None:  # a test may put a session of its own in place
        bulkhead.key_for, bulkhead.limits = key_for, lambda: limits
    return enforce(ext["smart_http"], lambda: policy)


def _rules() -> tuple[OutboundPolicy, Callable[[str], str], BulkheadLimits]:
    """The outbound policy, the bulkhead's EHR keys and its bounds, built once per settings object (settings never
    change once built; replace_settings makes a new one): a launch asks for the session three times."""
    settings = current_settings()
    kept = current_app.extensions.get("smart_rules")
    if kept is None or kept[0] is not settings:
        kept = (settings, outbound_policy(), _key_for_config(), bulkhead_limits())
        current_app.extensions["smart_rules"] = kept
    return kept[1], kept[2], kept[3]


def _start_request_budget() -> None:
    budget = current_settings().ehr_request_budget_seconds
    g._ipv_ehr_scope = enter_request_scope(RequestScope(time.monotonic() + budget if budget > 0 else None))


def _end_request_budget(_exc: BaseException | None) -> None:
    token = g.pop("_ipv_ehr_scope", None)
    if token is not None:
        try:
            exit_request_scope(token)
        except ValueError:  # reset from another context (a streamed response): the next request sets its own
            pass


def init_app(app: Flask) -> None:
    """Every page's calls to EHRs end by tuning.ehr_request_budget_seconds after the page was asked for, so a page
    answers before gunicorn's and nginx's timeouts whatever the EHR does; and they hold one bulkhead slot per EHR
    between them, however many run in parallel."""
    app.before_request(_start_request_budget)
    app.teardown_request(_end_request_budget)


def discovery(iss: str, *, timeout: float | None = None) -> SmartConfiguration:
    """The SMART configuration of ``iss`` (cached per issuer for tuning.discovery_ttl_seconds, refreshed
    ahead)."""
    settings = current_settings()
    cache = current_app.extensions.setdefault("smart_discovery", DiscoveryCache(settings.discovery_ttl_seconds))
    timeout = timeout if timeout is not None else settings.http_timeout_seconds
    return cache.get(iss, http=http_session(), timeout=timeout, ttl_seconds=settings.discovery_ttl_seconds)


def prefetch_issuers(timeout: float = 3.0) -> list[str]:
    """Read every allow-listed issuer's discovery document and JWKS, and the style files the EHRs named
    (``known_style_urls``), into the caches (start-up warm-up), so no launch waits on them; returns the issuers that
    could not be read (logged, never fatal: an EHR that is down at start-up is read on its first launch instead).
    The connections this opened (to the EHRs and to the database) are closed: under gunicorn's preload the master
    runs this, and forked workers must not share its sockets."""
    failed = []
    try:
        for iss in current_settings().allowed_iss:
            try:
                config = discovery(iss, timeout=timeout)
                if config.jwks_uri:
                    prefetch_jwks(config.jwks_uri, http=http_session(), timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - any failure here only means "read it later"
                failed.append(iss)
                log.info("start-up prefetch of an issuer failed (%s)", exc.__class__.__name__)
        for url in known_style_urls():
            cached_smart_style(url, timeout=timeout)
    finally:
        session = current_app.extensions.pop("smart_http", None)
        if session is not None:
            session.close()
        close_pooled_connections(current_app)  # the style URLs' read: no database connection crosses a fork either
    return failed


def cached_smart_style(url: str | None, *, timeout: float = 5.0) -> dict[str, str]:
    """The EHR's sanitized ``smart_style_url`` document, cached per URL (tuning.style_ttl_seconds, at most
    STYLE_CACHE_ENTRIES URLs: the URL comes from the EHR's token response)."""
    settings = current_settings()
    cache = current_app.extensions.setdefault("smart_style", RefreshingCache(float(settings.style_ttl_seconds),
                                                                            max_entries=STYLE_CACHE_ENTRIES))
    return cached_style(url, cache, http=http_session(), timeout=min(settings.http_timeout_seconds, timeout))


# The newest launch of an issuer: by the expiry index, newest first (a launch's expiry follows its last use), and
# only among launches used in the last week, so an issuer with none is not a scan of every launch kept.
_NEWEST_CONTEXT = (select(LaunchRecord.context_enc)
                   .where(LaunchRecord.iss == bindparam("iss"), LaunchRecord.expires_at > bindparam("since"),
                          LaunchRecord.context_enc.is_not(None))
                   .order_by(LaunchRecord.expires_at.desc()).limit(1))
STYLE_LOOKBACK = timedelta(days=7)


def known_style_urls() -> list[str]:
    """The style file each allow-listed EHR named at its newest launch. Its URL comes in the token response, so only
    a launch tells it; read at start, the style is in the cache before forking, and a worker's first launch makes
    the same EHR calls as every later one (token and context). An EHR that names another URL is read then."""
    urls: list[str] = []
    since = datetime.now(UTC) - STYLE_LOOKBACK
    try:
        with session_scope() as db:
            for iss in current_settings().allowed_iss:
                context = decrypt_json(db.execute(_NEWEST_CONTEXT, {"iss": iss, "since": since}).scalar(),
                                       where="launch context") or {}
                url = context.get("smart_style_url")
                if isinstance(url, str) and url and url not in urls:
                    urls.append(url)
    except Exception as exc:  # noqa: BLE001 - no table yet, a key rotated away: the first launch reads the style
        log.info("start-up read of the EHRs' style URLs failed (%s)", exc.__class__.__name__)
    return urls


def register_jti(jti: str) -> bool:
    """Record a client-assertion jti; False if it was already used (never reuse one)."""
    app = current_app._get_current_object()
    try:
        with session_scope(app) as db:
            db.add(UsedJti(jti=jti))
    except IntegrityError:
        return False
    return True


def client_auth(register: Callable[[str], bool] | None = None) -> ClientAuth:
    """Token-endpoint credentials of the configured deployment (built per use: config may change in tests).
    ``register`` records a client assertion's jti (default: committed at once, register_jti)."""
    return ClientAuth.from_deployment(current_settings(), register_jti=register or register_jti)


def _lock_launch_row(db: Session, launch_id: str) -> None:
    """Begin a transaction holding the launch row's write lock until it ends: ``SELECT ... FOR UPDATE`` on
    PostgreSQL; on SQLite a no-op UPDATE of the row, which takes the database's one write lock."""
    db.commit()  # the lock's transaction holds the refresh only
    if db.get_bind().dialect.name == "sqlite":
        db.execute(update(LaunchRecord).where(LaunchRecord.id == launch_id).values(id=LaunchRecord.id)
                   .execution_options(synchronize_session=False))
    else:
        db.execute(select(LaunchRecord.id).where(LaunchRecord.id == launch_id).with_for_update())


def _register_in(db: Session) -> Callable[[str], bool]:
    """Record a client assertion's jti in the lock's own transaction (SQLite: another connection's write would wait
    for the lock this transaction holds)."""

    def register(jti: str) -> bool:
        db.add(UsedJti(jti=jti))
        db.flush()
        return True

    return register


def _refreshed_tokens(launch: Any, timeout: float, rejected: str | None) -> dict[str, Any]:
    """The launch's tokens after one refresh, made under the launch row's lock: a process that waited for the lock
    finds the token another one stored, still fresh, and uses it without calling the EHR. ``rejected``: an access
    token the EHR refused (401) is renewed even though it has not expired, unless another process already has."""
    db = get_session()
    _lock_launch_row(db, launch.id)
    try:
        db.refresh(launch.record)  # read after the lock: another process may have refreshed meanwhile
        tokens = launch.tokens
        stale = token_expired(tokens) or (rejected is not None and tokens.get("access_token") == rejected)
        if stale and tokens.get("refresh_token"):
            try:
                new = refresh(discovery(launch.iss), refresh_token=tokens["refresh_token"],
                              auth=client_auth(_register_in(db)), http=http_session(), timeout=timeout)
            except TokenError as exc:
                # A page shows this plainly (LaunchError); the outbox treats it as "sign-in gone".
                if exc.status and 400 <= exc.status < 500:
                    raise LaunchError("Your sign-in at the EHR has ended. Launch the app again from the "
                                      "patient's chart.", 401) from None
                raise LaunchError("The EHR could not renew your sign-in just now. Try again.", 503) from None
            except DiscoveryError:
                raise LaunchError("The EHR could not renew your sign-in just now. Try again.", 503) from None
            tokens = {**tokens, **new}
            launch.set_tokens(tokens)
        db.commit()  # stores the new tokens and lets the lock go
    except BaseException:
        db.rollback()
        raise
    return tokens


def fhir_client_for(launch: Any, *, rejected: str | None = None) -> FhirClient:
    """An authenticated FHIR client for ``launch`` (a smart_app.launch.state.Launch).

    Refreshes the access token first when it has expired, or is the ``rejected`` one, and a refresh token exists
    (one refresh per launch across processes: ``_refreshed_tokens``); the new tokens are stored (encrypted) before
    the client is returned.
    """
    timeout = current_settings().http_timeout_seconds
    tokens = launch.tokens
    if (token_expired(tokens) or rejected is not None) and tokens.get("refresh_token"):
        tokens = _refreshed_tokens(launch, timeout, rejected)
    return FhirClient(launch.iss, tokens.get("access_token"), timeout=timeout, session=http_session())


_system_lock = threading.Lock()


def system_client(iss: str) -> FhirClient:
    """A FHIR client with a SMART Backend Services (system) token for ``iss``, for chart writes whose launch
    token is gone. Only where the deployment registers it: ``backend_services: {scope: "system/..."}`` in the
    deployment file (client_credentials, authenticated with the deployment's private_key_jwt). The token is
    kept in memory only (never stored) until shortly before it expires. Raises LookupError when not set up."""
    app = current_app._get_current_object()
    settings = current_settings()
    if settings.backend_services is None:
        raise LookupError("backend services are not configured for this deployment")
    if settings.client_auth != "private_key_jwt":
        raise LookupError("backend services need private_key_jwt client authentication")
    if not launch_allowed(iss, settings.allowed_iss, settings):
        raise LookupError("issuer not allow-listed")
    cache = app.extensions.setdefault("system_tokens", {})
    with _system_lock:
        tokens = cache.get(iss)
        if not tokens or token_expired(tokens, skew=60):
            tokens = client_credentials(discovery(iss), scope=settings.backend_services.scope,
                                        auth=client_auth(), http=http_session(),
                                        timeout=settings.http_timeout_seconds)
            cache[iss] = tokens
    return FhirClient(iss, tokens["access_token"], timeout=settings.http_timeout_seconds, session=http_session())


def warm_up(app: Flask) -> None:
    """Start-up: the app's signing keys parsed, and each allow-listed EHR's discovery document, JWKS and the style
    file its newest launch named read, so the first launch in a worker waits on none of them."""
    _load_signing_keys(app)
    with app.app_context():
        unread = prefetch_issuers()
    warmup_log.info("warmed up: %d allow-listed EHRs read ahead (%d could not be read)",
             len(settings_of(app).allowed_iss), len(unread))


def _load_signing_keys(app: Flask) -> None:
    """The private_key_jwt keys (current and next), parsed into load_private_key's per-process cache."""
    settings = settings_of(app)
    if settings.client_auth != "private_key_jwt":
        return
    for path in (settings.private_key_file, settings.next_private_key_file):
        if path:
            try:
                load_private_key(path)
            except (OSError, ValueError) as exc:  # the start-up checks name the problem; a request would too
                warmup_log.warning("warm-up: a signing key could not be read (%s)", type(exc).__name__)
