"""Work done once at start instead of in some clinician's request: the referral directory and its index,
this year's holiday calendar, the FHIR models chart writes are validated with (building them cost the first
write in each worker ~75 ms; an empty resource builds only the outer model, so a made-up plan of every kind is
validated too), the page templates (compiling one cost its first request 10-30 ms), the referral page's patient
texts (config/directory/content.yaml: parsing it cost each worker's first referral pages ~170 ms, and every
thread that reached it before the first parse was done parsed it again), the ORM's mappers, the app's private
signing keys (parsing one cost each worker's first launch or JWKS request ~30 ms), and each allow-listed EHR's
discovery document and JWKS (a cold launch read both).
Under gunicorn with ``preload_app`` (config/gunicorn.conf.py) this runs once in the master and
the workers share the result copy-on-write. (create_app then freezes it all out of the cyclic collector.)"""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from fhir.resources.R4B import get_fhir_model_class
from flask import Flask
from sqlalchemy.orm import configure_mappers

from fhir.builders import ALL_RESOURCES, WritebackInput, plan_writeback
from fhir.smart.client_auth import load_private_key
from referrals.closures import holiday_name
from referrals.store import store_for
from smart_app.blueprints.referral import content_in
from smart_app.ehr import prefetch_issuers
from smart_app.i18n import SUPPORTED
from smart_app.profiles import profile_for

log = logging.getLogger("ipv.warmup")


def warm_up(app: Flask) -> None:
    index = store_for(app).index  # a broken directory stops start-up here, naming the file
    holiday_name(datetime.now(ZoneInfo(index.timezone)).date(), index.directory.holidays)  # this year's calendar
    for resource_type in ALL_RESOURCES:
        try:  # the first validation builds the nested models' validators; an empty resource is invalid
            get_fhir_model_class(resource_type).model_validate({"resourceType": resource_type})
        except ValueError:
            pass
    _validate_a_made_up_plan(app)
    for lang in SUPPORTED:
        content_in(lang)
    _load_signing_keys(app)
    configure_mappers()
    templates = _compile_templates(app)
    with app.app_context():
        unread = prefetch_issuers()
    log.info("warmed up: directory of %d services; %d templates; %d allow-listed EHRs read ahead (%d could not be "
             "read)", len(index.directory.services), templates, len(app.config.get("ALLOWED_ISS") or []), len(unread))


def _validate_a_made_up_plan(app: Flask) -> None:
    """Plan (and so validate) every kind of chart write for an invented visit: the nested models' validators
    (CodeableConcept, Reference, Attachment...) are built here, not in the first consent page of a worker."""
    inp = WritebackInput(referral_key="warm-up", patient_id="warm-up", encounter_id="warm-up",
                         author_reference="Practitioner/warm-up", author_name="Warm-up",
                         screening={"instrument": "warm-up", "questionnaire": "urn:warm-up", "version": "1", "score": 0,
                                    "interpretation": "negative", "answers": {},
                                    "completed_at": "2000-01-01T00:00:00+00:00"},
                         referral={}, resources=list(ALL_RESOURCES))
    try:
        plan_writeback(inp, profile_for(app))
    except Exception as exc:  # noqa: BLE001 - a warm-up that cannot run leaves the work to the first request
        log.warning("warm-up: chart write models not warmed (%s)", type(exc).__name__)


def _load_signing_keys(app: Flask) -> None:
    """The private_key_jwt keys (current and next), parsed into load_private_key's per-process cache."""
    deployment = app.config.get("DEPLOYMENT")
    if deployment is None or deployment.client_auth != "private_key_jwt":
        return
    for path in (deployment.private_key_file, deployment.next_private_key_file):
        if path:
            try:
                load_private_key(path)
            except (OSError, ValueError) as exc:  # the start-up checks name the problem; a request would too
                log.warning("warm-up: a signing key could not be read (%s)", type(exc).__name__)


def _compile_templates(app: Flask) -> int:
    """Compile every page template into the environment's cache (Jinja keeps 400; the app has a few dozen)."""
    names = [n for n in app.jinja_env.list_templates() if n.endswith(".html")]
    for name in names:
        app.jinja_env.get_template(name)
    return len(names)
