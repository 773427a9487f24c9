"""Sandbox EHR application factory.

Config: ``SANDBOX_DB``, ``APP_LAUNCH_URL``, ``SANDBOX_BASE_URL``, ``SANDBOX_FAULTS``, ``SANDBOX_PERSONALITY``
(``generic`` | ``epic`` | ``oracle``, see ``personality.py``), ``SANDBOX_REGISTERED_APIS`` (override the
personality's registered APIs: ``"all"`` or a list such as ``["DocumentReference.create"]``),
``SANDBOX_PER_LAUNCH_ISS`` (each standalone launch under an iss of its own, see ``issuers.py``),
``APP_STANDALONE_URL`` (the app's standalone launch URL; default ``<APP_LAUNCH_URL>/standalone``).

Routes: ``/fhir/...`` FHIR R4 API and SMART discovery (iss = ``<base>/fhir``), ``/auth/...``
authorization server, ``/ehr`` the EHR simulator page, ``/__faults`` fault injection (tests).
"""

from __future__ import annotations

import importlib
import secrets
from pathlib import Path
from typing import Any

from flask import Flask


def create_sandbox_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=False)
    app.config.update(
        SECRET_KEY=secrets.token_urlsafe(32),
        SANDBOX_DB=str(Path("instance") / "sandbox.db"),
        # Base URL of the app the simulator launches (its /launch endpoint).
        APP_LAUNCH_URL="http://127.0.0.1:5000/launch",
        SEED_DATA=True,
        # Vendor rules the FHIR API and auth server follow: generic | epic | oracle (sandbox_ehr/personalities/).
        SANDBOX_PERSONALITY="generic",
    )
    if config:
        app.config.update(config)
    Path(app.config["SANDBOX_DB"]).parent.mkdir(parents=True, exist_ok=True)
    # Each module exposes ``bp`` and, optionally, ``init_app(app)``.
    for name in ("personality", "store", "issuers", "fhir_api", "auth", "ehr_ui", "faults", "cds_client"):
        try:
            module = importlib.import_module(f"sandbox_ehr.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"sandbox_ehr.{name}":
                continue
            raise
        if hasattr(module, "init_app"):
            module.init_app(app)
        if hasattr(module, "bp"):
            app.register_blueprint(module.bp)
    return app
