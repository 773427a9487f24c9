"""Fail closed: a production start with an unsafe configuration stops, naming every problem.

The checks themselves are in ``config/checks.py``. The demo (``python -m sandbox_ehr.demo`` sets
``IPV_MODE=demo``) and the tests (``TESTING``, or ``IPV_MODE=test`` for a test's subprocess) say explicitly what
they are; nothing else relaxes the checks. Settings that cannot even be read (an unknown key in a file) stop
start-up in every mode. ``flask --app smart_app check-config [--online]`` prints every problem and exits 1
when any is an error.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click
import requests
from flask import Flask, current_app

from config.checks import METRICS_FOLDER, Problem, check_config, errors
from config.checks import run_mode as _run_mode
from config.current import settings_of
from config.files import SettingsError
from config.settings import Settings
from fhir.smart.discovery import DiscoveryError, fetch_configuration

__all__ = ["ConfigError", "enforce", "init_app", "invoked_as_check_config", "online_problems", "run_mode"]

log = logging.getLogger(__name__)


class ConfigError(RuntimeError):
    """Production start refused; the message lists every problem, one a line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"refusing to start: {len(errors(problems))} configuration problem(s) "
                         f"(`flask --app smart_app check-config` lists them too):\n{lines}")

    @classmethod
    def from_settings_error(cls, exc: SettingsError) -> ConfigError:
        return cls([Problem("error", "", problem) for problem in exc.problems])


def invoked_as_check_config() -> bool:
    """True while the Flask CLI loads the app for `check-config` (which must run on a configuration that
    cannot start). Read from argv: the Flask CLI loads the app before it has parsed the command name."""
    argv0 = Path(sys.argv[0]).name if sys.argv else ""
    return argv0 in ("flask", "__main__.py") and "check-config" in sys.argv[1:]


def run_mode(app: Flask) -> str:
    return _run_mode(settings_of(app), app.testing)


def all_problems(app: Flask) -> list[Problem]:
    """config/checks.py's list (the deployment against its EHR profile included), or why the settings could not
    be read."""
    unreadable = app.extensions.get("ipv_settings_error")
    if unreadable is not None:
        return ConfigError.from_settings_error(unreadable).problems
    return check_config(settings_of(app))


def enforce(app: Flask) -> None:
    problems = all_problems(app)
    mode = run_mode(app)
    # Every request would fail, whatever the mode: stop here, naming the folder.
    unusable = [p for p in errors(problems) if p.setting == METRICS_FOLDER]
    if unusable:
        raise ConfigError(unusable)
    if mode != "production":
        if settings_of(app).ipv_mode in ("demo", "test") or mode == "demo":
            log.warning("running in %s mode: start-up checks relaxed (%d problem(s) a production start would "
                        "refuse)", mode, len(errors(problems)))
        return
    if errors(problems):
        raise ConfigError(problems)
    for problem in problems:
        log.warning("%s", problem)


def online_problems(settings: Settings, timeout: float = 10.0) -> list[Problem]:
    """Fetch each allow-listed EHR's SMART discovery document and check what this deployment needs from it."""
    problems: list[Problem] = []
    for iss in settings.allowed_iss:
        try:
            smart = fetch_configuration(iss, http=requests.Session(), timeout=timeout)
        except (DiscoveryError, requests.RequestException) as exc:
            problems.append(Problem("error", "allowed_iss", f"{iss}: discovery failed: {exc}"))
            continue
        for name in ("authorization_endpoint", "token_endpoint"):
            url = getattr(smart, name)
            if not url.startswith("https://"):
                problems.append(Problem("error", "allowed_iss", f"{iss}: {name} {url} is not https"))
        if smart.code_challenge_methods_supported and "S256" not in smart.code_challenge_methods_supported:
            problems.append(Problem("error", "allowed_iss", f"{iss}: PKCE S256 not offered"))
        methods = smart.token_endpoint_auth_methods_supported
        auth = settings.client_auth
        if auth != "none" and methods and auth not in methods:
            problems.append(Problem("error", "client_auth", f"{iss}: {auth} not among the EHR's "
                                                            f"token_endpoint_auth_methods ({', '.join(methods)})"))
    return problems


@click.command("check-config")
@click.option("--online", is_flag=True, help="Also fetch each allow-listed EHR's .well-known/smart-configuration.")
def check_config_command(online: bool) -> None:
    """Print every configuration problem; exit 1 if a production start would be refused."""
    app = current_app._get_current_object()
    problems = all_problems(app)
    readable = "ipv_settings_error" not in app.extensions
    if online and readable:
        settings = settings_of(app)
        problems += online_problems(settings, timeout=settings.http_timeout_seconds)
    for problem in problems:
        click.echo(str(problem))
    bad = errors(problems)
    mode = run_mode(app) if readable else "settings unreadable"
    click.echo(f"{len(bad)} error(s), {len(problems) - len(bad)} warning(s) for a production start "
               f"(mode now: {mode})")
    if bad:
        raise SystemExit(1)


def init_app(app: Flask, unreadable: SettingsError | None = None) -> None:
    if unreadable is not None:
        app.extensions["ipv_settings_error"] = unreadable
    app.cli.add_command(check_config_command)
