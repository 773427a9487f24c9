"""Fail closed: a production start with an unsafe configuration stops, naming every problem.

The checks themselves are in ``config/checks.py``. The demo (``python -m sandbox_ehr.demo`` sets ``DEMO``) and
the tests (``TESTING``, or ``IPV_MODE=test`` for a test's subprocess) say explicitly what they are; nothing
else relaxes the checks. ``flask --app smart_app check-config [--online]`` prints every problem and exits 1
when any is an error.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click
import requests
from flask import Flask, current_app

from config.checks import Problem, check_config, errors, run_mode
from fhir.smart.discovery import DiscoveryError, fetch_configuration
from smart_app.ops.profiles import profile_for

__all__ = ["ConfigError", "enforce", "init_app", "invoked_as_check_config", "online_problems", "run_mode"]

log = logging.getLogger(__name__)


class ConfigError(RuntimeError):
    """Production start refused; the message lists every problem, one a line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"refusing to start: {len(errors(problems))} configuration problem(s) "
                         f"(`flask --app smart_app check-config` lists them too):\n{lines}")


def invoked_as_check_config() -> bool:
    """True while the Flask CLI loads the app for `check-config` (which must run on a configuration that
    cannot start). Read from argv: the Flask CLI loads the app before it has parsed the command name."""
    argv0 = Path(sys.argv[0]).name if sys.argv else ""
    return argv0 in ("flask", "__main__.py") and "check-config" in sys.argv[1:]


def all_problems(app: Flask) -> list[Problem]:
    """config/checks.py's list, plus whether the deployment's EHR profile can protect the note."""
    problems = check_config(app.config)
    if app.config.get("DEPLOYMENT") is not None:
        try:
            profile_for(app).check_startup()
        except (ValueError, OSError, KeyError) as exc:  # ProfileError, RestrictedNoteTypeMissing, no such file
            problems.append(Problem("error", "ehr_profile", str(exc)))
    return problems


def enforce(app: Flask) -> None:
    problems = all_problems(app)
    mode = run_mode(app.config)
    if mode != "production":
        if mode == "demo" or app.config.get("IPV_MODE") in ("demo", "test"):
            log.warning("running in %s mode: start-up checks relaxed (%d problem(s) a production start would "
                        "refuse)", mode, len(errors(problems)))
        return
    if errors(problems):
        raise ConfigError(problems)
    for problem in problems:
        log.warning("%s", problem)


def online_problems(config: Any, timeout: float = 10.0) -> list[Problem]:
    """Fetch each allow-listed EHR's SMART discovery document and check what this deployment needs from it."""
    problems: list[Problem] = []
    dep = config.get("DEPLOYMENT")
    for iss in config.get("ALLOWED_ISS") or []:
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
        if dep is not None and dep.client_auth != "none" and methods and dep.client_auth not in methods:
            problems.append(Problem("error", "client_auth", f"{iss}: {dep.client_auth} not among the EHR's "
                                                            f"token_endpoint_auth_methods ({', '.join(methods)})"))
    return problems


@click.command("check-config")
@click.option("--online", is_flag=True, help="Also fetch each allow-listed EHR's .well-known/smart-configuration.")
def check_config_command(online: bool) -> None:
    """Print every configuration problem; exit 1 if a production start would be refused."""
    config = current_app.config
    problems = all_problems(current_app)
    if online:
        problems += online_problems(config, timeout=float(config.get("HTTP_TIMEOUT_SECONDS") or 10))
    for problem in problems:
        click.echo(str(problem))
    bad = errors(problems)
    click.echo(f"{len(bad)} error(s), {len(problems) - len(bad)} warning(s) for a production start "
               f"(mode now: {run_mode(config)})")
    if bad:
        raise SystemExit(1)


def init_app(app: Flask) -> None:
    app.cli.add_command(check_config_command)
