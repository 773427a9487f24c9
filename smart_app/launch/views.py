"""SMART App Launch 2.2: EHR launch (``/launch``), standalone launch (``/launch/standalone``),
the redirect back (``/callback``) and our public keys (``/.well-known/jwks.json``).

Per-launch secrets (state, PKCE verifier, nonce) live server-side in a LaunchRecord keyed
by state and bound to this browser; the browser only carries a random browser id.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, g, jsonify, redirect, render_template, request, session, url_for
from sqlalchemy import and_, bindparam, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from config import languages
from config.current import current_settings
from config.ehrs import ehr_for, ehr_id_for, launch_allowed
from fhir.client import FhirClient, FhirError
from fhir.context import ContextError, read_launch_context
from fhir.smart.client_auth import ClientAuthError, load_private_key, public_jwk
from fhir.smart.discovery import DiscoveryError, SmartConfiguration, normalize_iss
from fhir.smart.id_token import IdTokenError, fhir_user, verify_id_token
from fhir.smart.oauth import TokenError, authorize_url, exchange_code, new_nonce, new_pkce, new_state
from fhir.smart.style import style_css
from fhir.text import clean_text
from smart_app.launch.ehr import cached_smart_style, client_auth, discovery, http_session, outbound_policy
from smart_app.launch.resume import OPEN_WINDOW, find_offer
from smart_app.launch.revocation import revoke_later
from smart_app.launch.roles import PROGRAM_MANAGER, QUEUE_ROLES, apply_mapping, user_roles
from smart_app.launch.state import Launch, browser_id, launch_required, new_expiry
from smart_app.ops.audit import record_audit
from smart_app.ops.errors import LaunchError
from smart_app.store.crypto import decrypt_json, encrypt_json, keyed_hash
from smart_app.store.db import get_session
from smart_app.store.models import LaunchRecord, UsedCode, UsedJti

log = logging.getLogger(__name__)
bp = Blueprint("launch", __name__, template_folder="templates")

STATE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")  # our states are token_urlsafe(32)
# An EHR that fails or misbehaves stops the launch with a plain page and 424 (Failed Dependency), never a
# 5xx: a 5xx from this app means a bug here (zero 5xx, whatever the EHR sends).
EHR_FAILED = 424
PENDING_SECONDS = 600  # the user has ten minutes to finish signing in at the EHR
MAX_PARAM = 4096  # longer query values are garbage, not an EHR


def _param(name: str, *, required: bool = True) -> str | None:
    value = request.args.get(name)
    if value is None or value == "":
        if required:
            raise LaunchError(f"The request is missing '{name}'. Launch the app again from the EHR.", 400)
        return None
    if len(value) > MAX_PARAM or not value.isprintable():
        raise LaunchError(f"The request has an invalid '{name}'. Launch the app again from the EHR.", 400)
    return value


def _allowed(iss: str) -> bool:
    """allowed_iss, or an iss or pattern of the deployment's ehrs block (config/ehrs.py)."""
    settings = current_settings()
    return launch_allowed(iss, settings.allowed_iss, settings)


def _redirect_uri() -> str:
    return current_settings().app_base_url + "/callback"


def _discover(iss: str) -> SmartConfiguration:
    try:
        config = discovery(iss)
    except DiscoveryError as exc:
        raise LaunchError(str(exc), EHR_FAILED) from None
    methods = config.code_challenge_methods_supported
    if methods and "S256" not in methods:
        raise LaunchError("The EHR does not support PKCE S256, which this app requires.", EHR_FAILED)
    # Every endpoint the EHR names must pass the outbound URL policy: the browser is sent to
    # the authorize endpoint, our credentials to the token endpoint.
    policy = outbound_policy()
    for url in (config.authorization_endpoint, config.token_endpoint, config.jwks_uri, config.revocation_endpoint):
        if url is not None and policy.refusal(url):
            log.warning("discovery names an endpoint outside the outbound policy: %s", policy.refusal(url))
            raise LaunchError("The EHR's configuration names a server this app is not allowed to use. "
                              "Nothing was sent to it; ask the app's administrator.", EHR_FAILED)
    return config


def _start(kind: str, iss: str, launch_param: str | None, scope: str) -> Any:
    # Allow-list first: an unknown iss gets nothing from us, not even a discovery request.
    if not _allowed(iss):
        raise LaunchError("This EHR is not registered to launch this app. "
                          "Ask the app's administrator to add it; nothing was sent to it.", 400)
    iss = normalize_iss(iss)
    if kind == "standalone" and ehr_for(iss, current_settings()) is None:
        # Without an EHR identity the queue could only be empty: say so instead of showing nothing.
        raise LaunchError("This app's settings do not say which EHR this address belongs to, so the social-work "
                          "queue cannot be shown. Ask the app's administrator to add it to the EHR's iss values "
                          "(ehrs in the deployment file); nothing was sent to it.", 400)
    config = _discover(iss)
    state, pkce, nonce = new_state(), new_pkce(), new_nonce()
    db = get_session()
    now = datetime.now(UTC)
    # Housekeeping: unfinished sign-ins expire; their secrets should not linger.
    db.execute(delete(LaunchRecord).where(LaunchRecord.status == "pending", LaunchRecord.expires_at < now))
    record = LaunchRecord(
        state=state, browser_id=browser_id(), iss=iss, kind=kind, status="pending",
        expires_at=now + timedelta(seconds=PENDING_SECONDS),
        pending_enc=encrypt_json({"code_verifier": pkce.verifier, "nonce": nonce, "launch": launch_param,
                                  "scope": scope, "redirect_uri": _redirect_uri()}),
    )
    db.add(record)
    db.commit()
    url = authorize_url(config, client_id=current_settings().client_id, redirect_uri=_redirect_uri(), scope=scope,
                        state=state, aud=iss, code_challenge=pkce.challenge, nonce=nonce, launch=launch_param)
    return redirect(url, code=302)


@bp.get("/launch")
def ehr_launch():
    """EHR launch: the EHR opens ``/launch?iss=...&launch=...``."""
    iss = _param("iss")
    launch_param = _param("launch")
    return _start("ehr", iss, launch_param, current_settings().scopes_ehr)


@bp.get("/launch/standalone")
def standalone_launch():
    """Standalone launch (social work worklist): the deployment's issuer, or ?iss= if allow-listed."""
    iss = _param("iss", required=False) or current_settings().standalone_iss
    if not iss:
        raise LaunchError("No EHR is configured for standalone launch (standalone_iss).", 400)
    return _start("standalone", iss, None, current_settings().scopes_standalone)


def _fail(record: LaunchRecord, message: str, status: int = 400) -> LaunchError:
    """Mark the launch failed (its secrets dropped) and return the error to raise."""
    record.status = "error"
    record.error = message[:500]
    record.pending_enc = None
    record.tokens_enc = None
    get_session().commit()
    return LaunchError(message, status)


# The callback's statements are built once with bound parameters: building a SQLAlchemy expression costs
# about as much as running it on SQLite. Those on plain columns run on the session's connection (same
# transaction), without the ORM's per-statement machinery: no ORM object is read or written by them.
_BY_STATE = select(LaunchRecord).where(LaunchRecord.state == bindparam("state"))
_LIVE = ("pending", "active")
_L = LaunchRecord.__table__.c
# The code and jti are written once and never read back (the used_at defaults apply).
_RECORD_CODE = insert(UsedCode.__table__)
_RECORD_JTI = insert(UsedJti.__table__)
# One query for the callback's two looks at other launches: this browser's live ones (_bind_to_user) and
# the ended ones a relaunch may resume (resume.OPEN_WINDOW, newest first).
_OTHER_LAUNCHES = select(_L.id, _L.status, _L.user_tag).where(
    _L.id != bindparam("rid"), or_(and_(_L.browser_id == bindparam("old_bid"), _L.status.in_(_LIVE)), OPEN_WINDOW),
).order_by(_L.resumable_until.desc())
# Pending sign-ins and this user's tagged launches: the ones _bind_to_user moves without decrypting. None of
# these rows is loaded in the request's session (only their columns were read), so none goes stale there.
_MOVE_MINE = update(LaunchRecord.__table__).where(
    _L.browser_id == bindparam("old_bid"), _L.id != bindparam("rid"),
    or_(_L.status == "pending", and_(_L.status == "active", _L.user_tag == bindparam("tag"))),
).values(browser_id=bindparam("new_bid"))


def _pending_for_this_browser(state: str | None) -> LaunchRecord | None:
    if not state or len(state) > 128 or not STATE.match(state):
        return None
    record = get_session().scalar(_BY_STATE, {"state": state})
    if record is None or record.status != "pending":
        return None
    if not secrets.compare_digest(record.browser_id.encode(), str(session.get("bid", "")).encode()):
        return None
    expires = record.expires_at if record.expires_at.tzinfo else record.expires_at.replace(tzinfo=UTC)
    if expires < datetime.now(UTC):
        return None
    return record


@bp.get("/callback")
def callback():
    record = _record_for_callback()
    code = _param("code")
    pending = decrypt_json(record.pending_enc) or {}
    settings = current_settings()
    timeout = settings.http_timeout_seconds
    # Single use, recorded before the exchange so two racing callbacks cannot both go on. The client
    # assertion is signed first, its jti joining the same commit (one transaction, not two).
    jtis: list[str] = []
    prepared = _prepare_exchange(record, pending, jtis)
    _consume_code(record, hashlib.sha256(code.encode()).hexdigest(), jtis)
    if isinstance(prepared, tuple):
        raise _fail(record, *prepared)
    config, auth, credentials = prepared.config, prepared.auth, prepared.credentials

    http = http_session()  # one handle for the token call, the JWKS and the context read
    try:
        tokens = exchange_code(config, code=code, redirect_uri=pending["redirect_uri"],
                               code_verifier=pending["code_verifier"], auth=auth, http=http,
                               timeout=timeout, credentials=credentials)
    except TokenError as exc:
        raise _fail(record, exc.message, 400 if exc.status and exc.status < 500 else EHR_FAILED) from None
    except ClientAuthError as exc:
        log.error("client authentication misconfigured: %s", clean_text(exc, 200))
        raise _fail(record, "The app's EHR registration is misconfigured (client authentication).", 500) from None
    claims = _identity_claims(record, tokens, pending, config, http=http, timeout=timeout)
    if record.kind == "ehr" and not tokens.get("patient"):
        raise _fail(record, "The EHR did not say which patient this launch is for.")
    if not isinstance(tokens.get("patient"), str | None):
        raise _fail(record, "The EHR sent a patient id this app cannot use.")
    context = _launch_context(record, tokens, claims, http=http, timeout=timeout)
    return _activate(record, tokens, context)


def _record_for_callback() -> LaunchRecord:
    """The pending sign-in this browser started, named by ``state``; the EHR's refusal said plainly."""
    error = request.args.get("error")
    record = _pending_for_this_browser(request.args.get("state"))
    if error:
        if record is None:
            # Anyone can link to /callback?error=...: text from the URL is shown only for a sign-in this
            # browser started; otherwise a fixed message.
            raise LaunchError("The sign-in at the EHR did not complete. Launch the app again from the EHR.", 400)
        # The EHR said no (user cancelled, scope refused...): say so plainly, cleaned and capped (L5).
        message = f"The EHR stopped the launch: {clean_text(error, 60)}"
        desc = clean_text(request.args.get("error_description"), 200)
        if desc:
            message += f" ({desc})"
        raise _fail(record, message, 400)
    if record is None:
        raise LaunchError("This sign-in does not match a launch started in this browser, or it has expired. "
                          "Launch the app again from the EHR.", 400)
    return record


@dataclass(frozen=True)
class _Exchange:
    config: Any
    auth: Any
    credentials: Any


def _prepare_exchange(record: LaunchRecord, pending: dict[str, Any], jtis: list[str]) -> _Exchange | tuple[str, int]:
    """The EHR's endpoints and this app's client authentication for the token call, or why the launch cannot go
    on (message, status) — decided before the code is recorded as used, reported after."""
    if not pending.get("code_verifier"):
        return ("This launch can no longer be completed. Launch the app again from the EHR.", 400)
    try:
        config = _discover(record.iss)
        auth = client_auth(_stage_jti(jtis))
        return _Exchange(config, auth, auth.oauth_kwargs(config.token_endpoint))
    except LaunchError as exc:
        return (exc.message, exc.status)
    except ClientAuthError as exc:
        log.error("client authentication misconfigured: %s", clean_text(exc, 200))
        return ("The app's EHR registration is misconfigured (client authentication).", 500)


def _consume_code(record: LaunchRecord, code_hash: str, jtis: list[str]) -> None:
    """Record the code (and the client assertion's jti) as used, in one commit; a second use is refused."""
    db = get_session()
    try:
        conn = db.connection()
        conn.execute(_RECORD_CODE, {"code_hash": code_hash})
        if jtis:
            conn.execute(_RECORD_JTI, [{"jti": jti} for jti in jtis])
        db.commit()
    except IntegrityError:
        db.rollback()
        if db.get(UsedCode, code_hash) is None:  # not the code: a jti already used (the registry refuses it)
            log.error("a client assertion jti was already recorded")
            raise _fail(record, "The sign-in could not be completed. Launch the app again from the EHR.",
                        500) from None
        raise _fail(record, "This sign-in code was already used. Launch the app again from the EHR.") from None


def _identity_claims(record: LaunchRecord, tokens: dict[str, Any], pending: dict[str, Any], config: Any, *,
                     http: Any, timeout: float) -> dict[str, Any]:
    """The id_token's verified claims when this app asked for openid; an id_token not asked for is dropped."""
    asked_openid = "openid" in str(pending.get("scope", "")).split()
    granted = str(tokens.get("scope") or pending.get("scope", "")).split()
    if not asked_openid:
        tokens.pop("id_token", None)  # not asked for: never trusted, never stored
        return {}
    if not (tokens.get("id_token") or "openid" in granted):
        return {}
    if not tokens.get("id_token"):
        raise _fail(record, "The EHR did not return the id_token this app asked for.")
    try:
        return verify_id_token(tokens["id_token"], issuer=config.issuer or record.iss,
                               client_id=current_settings().client_id, nonce=pending.get("nonce"),
                               jwks_uri=config.jwks_uri, http=http, timeout=timeout)
    except IdTokenError as exc:
        raise _fail(record, f"The EHR's identity token was refused: {exc}") from None


def _launch_context(record: LaunchRecord, tokens: dict[str, Any], claims: dict[str, Any], *, http: Any,
                    timeout: float) -> dict[str, Any]:
    """The launch context read from the EHR, with the SMART style and the user's app roles applied once."""
    client = FhirClient(record.iss, tokens["access_token"], timeout=timeout, session=http)
    try:
        context = read_launch_context(client, tokens, fhir_user=fhir_user(claims)).to_dict()
    except ContextError as exc:
        raise _fail(record, str(exc), EHR_FAILED) from None
    except FhirError as exc:
        message = (f"The EHR could not be read (HTTP {exc.status}). Try again." if exc.status else
                   "The EHR is not answering just now. Try again in a minute.")
        raise _fail(record, message, EHR_FAILED) from None
    # smart_style_url: no token sent, only safe values kept, cached per URL; served as /l/<lid>/smart-style.css.
    context["smart_style"] = cached_smart_style(context.get("smart_style_url"))
    # The deployment's role mapping, applied once here: every feature reads the stored app roles.
    context["user"] = apply_mapping(context.get("user") or {}, current_settings())
    return context


def _activate(record: LaunchRecord, tokens: dict[str, Any], context: dict[str, Any]) -> Any:
    """Store the tokens and context, bind the launch to this browser and user, offer a resume, audit, land."""
    db = get_session()
    others = db.connection().execute(_OTHER_LAUNCHES, {"rid": record.id, "old_bid": str(session.get("bid", "")),
                                                       "iss": record.iss, "now": datetime.now(UTC)}).all()
    # Relaunched after an accidental quick exit (same user, patient, encounter, within 15 min): offer it.
    offer = find_offer(db, record, context, [o.id for o in others if o.status == "ended"])
    launch = Launch(record)
    _bind_to_user(record, context, [o for o in others if o.status in _LIVE])
    # Stored encrypted; never sent to the browser. The id_token's claims were checked above.
    launch.set_tokens({k: v for k, v in tokens.items()
                       if k in ("access_token", "token_type", "expires_in", "expires_at", "refresh_token",
                                "scope", "id_token", "patient", "encounter")})
    launch.set_context(context)
    # The patient's preferred language when the app speaks it (config/languages.yaml), else English.
    data: dict[str, Any] = {"locale": languages.match((context.get("patient") or {}).get("language")) or "en"}
    if offer:
        data["resume_offer"] = offer
    launch.update_data(**data)
    record.pending_enc = None
    record.status = "active"
    record.expires_at = new_expiry()
    record_audit("launch", launch=launch, detail=record.kind, db=db)  # committed with the launch
    launch.save()
    log.info("launch active (kind=%s)", record.kind)
    response = redirect(_landing(launch), code=302)
    if g.get("revoke_after"):
        revoke_later(response, g.revoke_after)
    return response


def _stage_jti(jtis: list[str]) -> Callable[[str], bool]:
    """A jti registry that collects the jti for the callback's one commit (with the code): that INSERT fails
    (IntegrityError) for a jti already used, so none is ever sent twice."""

    def register(jti: str) -> bool:
        jtis.append(jti)
        return True

    return register


def _user_key(iss: str, context: dict[str, Any]) -> str:
    # The EHR identity, not the iss: one user signing in on two iss values of one EHR is one user.
    return f"{ehr_id_for(iss, current_settings())}|{(context.get('user') or {}).get('reference') or ''}"


def _user_tag(user_key: str) -> str:
    """Keyed HMAC of a launch's user key (LaunchRecord.user_tag): comparable in SQL, no id in clear."""
    return keyed_hash(f"launch-user|{user_key}")


def _bind_to_user(record: LaunchRecord, context: dict[str, Any], others: list[Any]) -> None:
    """A new browser id at sign-in (session fixation), and the launch bound to the EHR user who
    signed in (shared workstations): this browser's other launches move to the new id only if
    the same EHR user started them; another user's launches end here. Pending sign-ins move along.

    Who started another launch is read from its ``user_tag``; a launch whose tag is missing or different
    (an older row, another user, a rotated SECRET_KEY) is decided from its decrypted context as before.
    ``others``: (id, status, user_tag) of this browser's other pending and active launches."""
    old_bid = str(session.get("bid", ""))
    new_bid = secrets.token_urlsafe(24)
    me = _user_key(record.iss, context)
    my_tag = _user_tag(me)
    db = get_session()
    move_mine = False  # pending sign-ins or launches tagged with this user: moved by _MOVE_MINE
    move: list[str] = []  # untagged launches found to be this user's
    unsure: list[str] = []
    signed_in_before = False  # this session already carried a launch of the same user (its own sign-in)
    for other_id, status, tag in others:
        if status == "pending":
            move_mine = True
        elif tag is not None and hmac.compare_digest(tag, my_tag):
            move_mine = signed_in_before = True
        else:
            unsure.append(other_id)
    end: list[str] = []
    ended: list[str] = []
    if unsure:
        rows = db.execute(select(LaunchRecord.id, LaunchRecord.iss, LaunchRecord.context_enc,
                                 LaunchRecord.tokens_enc.is_not(None)).where(LaunchRecord.id.in_(unsure))).all()
        for other_id, iss, context_enc, has_tokens in rows:
            if _user_key(iss, decrypt_json(context_enc) or {}) == me:
                move.append(other_id)
                signed_in_before = True
            else:
                end.append(other_id)
                if has_tokens:
                    ended.append(other_id)
    # Set-based updates: one statement each, whatever the number of this browser's launches.
    if move_mine:
        db.connection().execute(_MOVE_MINE, {"old_bid": old_bid, "rid": record.id, "tag": my_tag, "new_bid": new_bid})
    if move:
        db.execute(update(LaunchRecord).where(LaunchRecord.id.in_(move), LaunchRecord.status.in_(_LIVE))
                   .values(browser_id=new_bid))
    if end:
        db.execute(update(LaunchRecord).where(LaunchRecord.id.in_(end), LaunchRecord.status == "active")
                   .values(status="ended"))
    record.browser_id = new_bid
    record.user_tag = my_tag
    # The CSRF token survives only a session this user's own earlier sign-in created (their other tabs' forms
    # keep working); a session planted before sign-in loses it with everything else.
    csrf_token = session.get("csrf_token") if signed_in_before else None
    session.clear()  # drops the old id with anything else the old session carried
    if csrf_token:
        session["csrf_token"] = csrf_token
    session["bid"] = new_bid
    session.permanent = False
    g.revoke_after = ended


WORKLIST_INTENTS = {"worklist", "social-work-worklist"}


def _landing(launch: Launch) -> str:
    # Standalone without a patient is the social worker's worklist; with a patient it is a screening.
    # An EHR can ask for the worklist directly with intent=worklist. A program manager (no patient) or
    # intent=report lands on the program report.
    # A standalone launch by a social-work role is the queue even when the EHR supplied a patient: the queue
    # offers that patient's referrals instead of a screening.
    roles = user_roles(launch.context.get("user") or {}, current_settings())
    if launch.context.get("intent") == "report" or (PROGRAM_MANAGER in roles and not launch.context.get("patient")):
        return url_for("report.page", lid=launch.id)
    queue_role = bool(set(roles) & set(QUEUE_ROLES))
    if (launch.kind == "standalone" and (queue_role or not launch.context.get("patient"))) \
            or launch.context.get("intent") in WORKLIST_INTENTS:
        return url_for("worklist.index", lid=launch.id)
    if launch.context.get("patient"):
        return url_for("screening.start", lid=launch.id)
    return url_for("launch.ready", lid=launch.id)


@bp.get("/l/<lid>/ready")
@launch_required
def ready():
    """Shown when the feature the launch leads to is not installed."""
    return render_template("launch/ready.html", launch=g.launch)


@bp.get("/l/<lid>/smart-style.css")
@launch_required
def smart_style():
    """The EHR's styling (smart_style_url) as CSS for this launch's pages."""
    return Response(style_css(g.launch.context.get("smart_style") or {}), mimetype="text/css")


@bp.get("/.well-known/jwks.json")
def jwks():
    """Our public signing keys for EHRs that fetch client keys by URL (private_key_jwt): the current key (the
    one that signs) and, during a rotation, the next one (published ahead, never used to sign)."""
    deployment = current_settings()
    keys = []
    if deployment.client_auth == "private_key_jwt":
        for path, kid in ((deployment.private_key_file, deployment.key_id),
                          (deployment.next_private_key_file, deployment.next_key_id)):
            if not path:
                continue
            try:
                keys.append(public_jwk(load_private_key(path), deployment.signing_alg, kid))
            except (OSError, ValueError, ClientAuthError) as exc:
                log.error("cannot publish a JWKS key: %s", type(exc).__name__)
    resp = jsonify({"keys": keys})
    resp.headers["Content-Type"] = "application/jwk-set+json"
    return resp
