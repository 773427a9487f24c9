"""One blueprint per feature; each module exposes ``bp``."""

from __future__ import annotations

import importlib

from flask import Flask

# Order matters only for readability; URL prefixes are set in each module.
BLUEPRINTS = ("exit", "launch", "screening", "referral", "writeback", "worklist", "cds", "report")


def register_blueprints(app: Flask) -> None:
    for name in BLUEPRINTS:
        try:
            module = importlib.import_module(f"smart_app.blueprints.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"smart_app.blueprints.{name}":
                continue  # feature not built yet
            raise
        app.register_blueprint(module.bp)
