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
from collections.abc import Callable
from datetime import datetime
from zoneinfo import ZoneInfo

from fhir.resources.R4B import get_fhir_model_class
from flask import Flask
from sqlalchemy.orm import configure_mappers

from fhir.builders import ALL_RESOURCES
from referrals.closures import holiday_name
from referrals.store import store_for

log = logging.getLogger("ipv.warmup")


Step = Callable[[Flask], None]
_KEY = "ipv_warmup_steps"


def init_app(app: Flask, *feature_steps: Step) -> None:
    """Each feature's own warm-up step (it knows what its first request would build); warm up now unless asked not
    to (the tests do without, except where they test it)."""
    app.extensions[_KEY] = feature_steps
    if app.config.get("WARM_UP", not app.testing):
        warm_up(app)


def warm_up(app: Flask) -> None:
    """The work every feature needs, then each feature's own step."""
    index = store_for(app).index  # a broken directory stops start-up here, naming the file
    holiday_name(datetime.now(ZoneInfo(index.timezone)).date(), index.directory.holidays)  # this year's calendar
    for resource_type in ALL_RESOURCES:
        try:  # the first validation builds the nested models' validators; an empty resource is invalid
            get_fhir_model_class(resource_type).model_validate({"resourceType": resource_type})
        except ValueError:
            pass
    configure_mappers()
    templates = _compile_templates(app)
    for step in app.extensions.get(_KEY, ()):
        step(app)
    log.info("warmed up: directory of %d services; %d templates", len(index.directory.services), templates)


def _compile_templates(app: Flask) -> int:
    """Compile every page template into the environment's cache (Jinja keeps 400; the app has a few dozen)."""
    names = [n for n in app.jinja_env.list_templates() if n.endswith(".html")]
    for name in names:
        app.jinja_env.get_template(name)
    return len(names)
