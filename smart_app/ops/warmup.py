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
from jinja2 import FileSystemBytecodeCache
from jinja2.bccache import Bucket
from sqlalchemy.orm import configure_mappers

from config.current import settings_of
from fhir.builders import ALL_RESOURCES
from referrals.closures import holiday_name
from referrals.store import store_for
from smart_app.store.directory import load_imports

log = logging.getLogger("ipv.warmup")


Step = Callable[[Flask], None]
_KEY = "ipv_warmup_steps"


def init_app(app: Flask, *feature_steps: Step) -> None:
    """Each feature's own warm-up step (it knows what its first request would build); warm up now unless asked not
    to (the tests do without, except where they test it)."""
    app.extensions[_KEY] = feature_steps
    app.jinja_env.bytecode_cache = template_bytecode_cache()
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


class _BestEffortBytecodeCache(FileSystemBytecodeCache):
    """Jinja's per-user cache of compiled templates (in the temporary directory, mode 0700, checked to be this
    user's): a start after the first loads each page template's code instead of compiling it again, two thirds
    of the warm-up. An entry is used only for the very source it was compiled from (Jinja keeps the source's
    checksum beside it). A cache that cannot be written or read (a read-only disk, a cut file) compiles as
    without one, never fails a page."""

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:  # noqa: BLE001 - an unreadable entry is a cache miss
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


def template_bytecode_cache() -> FileSystemBytecodeCache | None:
    try:
        return _BestEffortBytecodeCache(pattern="ipv-%s.jinja")
    except (OSError, RuntimeError):  # no safe temporary directory: compile every start
        return None
