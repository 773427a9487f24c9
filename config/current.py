"""The app's settings: stored once by the app factory, read by product code as the typed model.

``app.config`` keeps Flask's own keys (and its extensions'); everything of ours is ``current_settings()``.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, current_app

from config.settings import Settings

EXTENSION = "ipv_settings"


def init_app(app: Flask, settings: Settings) -> None:
    app.extensions[EXTENSION] = settings


def settings_of(app: Flask) -> Settings:
    return app.extensions[EXTENSION]


def current_settings() -> Settings:
    """The settings of the app handling this request (or in whose app context this runs)."""
    return current_app.extensions[EXTENSION]


def replace_settings(app: Flask, **overrides: Any) -> Settings:
    """Resolve ``app``'s settings again with ``overrides`` on top (validated as create_app's are) and use them."""
    settings = settings_of(app).replace(**overrides)
    init_app(app, settings)
    return settings
