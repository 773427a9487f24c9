"""The program report on PostgreSQL: an app on a database of its own with a year of small sites, its clock fixed."""

from __future__ import annotations

import pytest

from config.current import replace_settings
from smart_app import create_app
from tests.conftest import app_config
from tests.report.test_report import NOW, TEAMS, small_sites_over_a_year


@pytest.fixture
def pg_app(postgres_url):
    app = create_app(app_config(postgres_url))
    replace_settings(app, **TEAMS)
    app.config["REPORT_CLOCK"] = lambda: NOW
    small_sites_over_a_year(app)
    yield app
    app.extensions["db_engine"].dispose()
