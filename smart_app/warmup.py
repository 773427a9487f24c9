"""Work done once at start instead of in some clinician's request: the referral directory and its index,
the FHIR models chart writes are validated with (building them cost the first write in each worker
~75 ms), and each allow-listed EHR's discovery document and JWKS (a cold launch read both).
Under gunicorn with ``preload_app`` (config/gunicorn.conf.py) this runs once in the master and
the workers share the result copy-on-write."""

from __future__ import annotations

import logging

from fhir.resources.R4B import get_fhir_model_class
from flask import Flask

from fhir.builders import ALL_RESOURCES
from referrals.store import store_for
from smart_app.ehr import prefetch_issuers

log = logging.getLogger("ipv.warmup")


def warm_up(app: Flask) -> None:
    index = store_for(app).index  # a broken directory stops start-up here, naming the file
    for resource_type in ALL_RESOURCES:
        try:  # the first validation builds the nested models' validators; an empty resource is invalid
            get_fhir_model_class(resource_type).model_validate({"resourceType": resource_type})
        except ValueError:
            pass
    with app.app_context():
        unread = prefetch_issuers()
    log.info("warmed up: directory of %d services; %d allow-listed EHRs read ahead (%d could not be read)",
             len(index.directory.services), len(app.config.get("ALLOWED_ISS") or []), len(unread))
