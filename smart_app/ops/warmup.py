"""Work done once at start instead of in some clinician's request (docs/decisions/0002-start-up-work.md): the
referral directory and its index, this year's holiday calendar, the FHIR models chart writes are validated with
(an empty resource builds only the outer model, so each feature's step validates a made-up plan of every kind),
the page templates, the ORM's mappers, then each feature's own step: the referral page's patient texts, the
app's private signing keys, each allow-listed EHR's discovery document, JWKS and the style file its newest
launch named (a cold launch read all three).
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

from config.current import settings_of
from fhir.builders import ALL_RESOURCES
from referrals.closures import holiday_name
from referrals.store import store_for
from smart_app.ops.templating import CompiledTemplates, page_templates
from smart_app.store.directory import load_imports

log = logging.getLogger("ipv.warmup")


Step = Callable[[Flask], None]
_KEY = "ipv_warmup_steps"


def init_app(app: Flask, *feature_steps: Step) -> None:
    """Each feature's own warm-up step (it knows what its first request would build); warm up now unless asked not
    to (the tests do without, except where they test it)."""
    app.extensions[_KEY] = feature_steps
    chosen = settings_of(app).warm_up
    if chosen if chosen is not None else not app.testing:
        warm_up(app)


def warm_up(app: Flask) -> None:
    """The work every feature needs, then each feature's own step."""
    load_imports(app)  # the database's newest directory import, where there is one
    index = store_for(app).index  # a broken directory stops start-up here, naming the file
    holiday_name(datetime.now(ZoneInfo(index.timezone)).date(), index.directory.holidays)  # this year's calendar
    for resource_type in ALL_RESOURCES:
        try:  # the first validation builds the nested models' validators; an empty resource is invalid
            get_fhir_model_class(resource_type).model_validate({"resourceType": resource_type})
        except ValueError:
            pass
    configure_mappers()
    templates, loaded = _compile_templates(app)
    for step in app.extensions.get(_KEY, ()):
        step(app)
    log.info("warmed up: directory of %d services; %d templates, %d of them loaded compiled ahead",
             len(index.directory.services), templates, loaded)


def _compile_templates(app: Flask) -> tuple[int, int]:
    """Every page template into Jinja's memory: its code loaded from the folder compiled ahead where it is there
    for this very source, else compiled. Returns (templates, loaded)."""
    names = page_templates(app.jinja_env)
    for name in names:
        app.jinja_env.get_template(name)
    cache = app.jinja_env.bytecode_cache
    return len(names), cache.loaded if isinstance(cache, CompiledTemplates) else 0
