"""Program report for the ``program_manager`` role: per site (and, for referrals, per team that works them) screens,
positive screens, consented referrals, warm hand-offs offered and completed, first contact within the due time, the
median time to first contact, and rates, for a closed month, quarter or 12 months. Counts are suppressed below 11,
also where a difference or another view would give them back (smart_app/report/suppress.py). No patient is shown or
linked. A program manager reads their own EHR's numbers (config/ehrs.py: the same on any of its iss values); the CLI
reads the whole deployment's, or one EHR's with ``--ehr``.

``/l/<lid>/report?view=month|quarter|rolling&period=2026-11|2026-Q3`` the page (server-rendered SVG chart, no
JavaScript), ``/l/<lid>/report.csv`` with the same arguments the same numbers as CSV, ``flask --app smart_app
report --view quarter --period 2026-Q3`` the same CSV on stdout. ``?month=YYYY-MM`` still opens that month. A period
is offered once it has closed; the clock is ``REPORT_CLOCK`` when the app sets one (tests), else the system's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import click
from flask import Blueprint, Response, abort, current_app, g, render_template, request

from config.current import current_settings, settings_of
from config.ehrs import ehr_for, ehr_named, normalise
from smart_app.launch.roles import PROGRAM_MANAGER, user_roles
from smart_app.launch.state import launch_required
from smart_app.ops.audit import record_audit
from smart_app.report import measures as ms
from smart_app.report import periods as pd
from smart_app.report import tables as rpt
from smart_app.store.db import get_session, session_scope

bp = Blueprint("report", __name__, template_folder="templates", url_prefix="/l/<lid>", cli_group=None)


def _now() -> datetime:
    clock: Callable[[], datetime] | None = current_app.config.get("REPORT_CLOCK")
    return clock() if clock else datetime.now(UTC)


def _require_program_manager() -> None:
    # The app roles the launch's callback mapped (smart_app/launch/roles.py), as every feature reads them.
    if PROGRAM_MANAGER not in user_roles(g.launch.context.get("user") or {}, current_settings()):
        abort(403, description="The program report is only for program managers. "
                               "Ask your administrator if you need access.")


def _period(kind: str | None, key: str | None, now: datetime) -> pd.Period:
    """The period asked for (the latest closed one of the view when none); 400 when it is not one, 404 while it
    is still open."""
    if request.args.get("month") and not key:
        kind, key = pd.MONTH, request.args["month"]
    kind = kind or pd.MONTH
    if kind not in pd.KINDS:
        abort(400, description="Choose a view: month, quarter or rolling (12 months).")
    if not key:
        return pd.latest(kind, now)
    period = pd.parse(kind, key)
    if period is None:
        abort(400, description="Choose a month as YYYY-MM or a quarter as YYYY-Q1 to YYYY-Q4.")
    if not pd.closed(period, now):
        abort(404, description="This period has not closed yet: the report shows a period once it has ended.")
    return period


def _audit_name(period: pd.Period) -> str:
    """The period as the access audit names it: a month as YYYY-MM, as it always has; a quarter or 12 months with
    its view."""
    return period.key if period.kind == pd.MONTH else f"{period.kind} {period.key}"


def ehr_filter(iss: str, deployment: Any) -> ms.EhrFilter:
    """The EHR whose numbers a program manager launched on ``iss`` reads (config/ehrs.py): on any of its iss values
    the same report; another EHR's sites are not in it."""
    ehr = ehr_for(iss, deployment)
    if ehr is None:  # an iss the ehrs block ties to no EHR is one of its own
        return ms.EhrFilter(normalise(iss), frozenset({normalise(iss)}))
    return ms.EhrFilter(ehr.id, ehr.iss)


def _view(db, kind: str | None, key: str | None, now: datetime) -> rpt.View:
    period = _period(kind, key, now)
    deployment = current_settings()
    return rpt.build(db, period, now, ms.DueRule.from_config(current_app.config), deployment,
                     ehr_filter(g.launch.iss, deployment))


@bp.route("/report", methods=["GET"])
@launch_required
def page() -> str:
    _require_program_manager()
    now = _now()
    view = _view(get_session(), request.args.get("view"), request.args.get("period"), now)
    record_audit("view_report", patient={}, detail=_audit_name(view.period))  # no patient data in the report
    return render_template("report/index.html", lid=g.launch.id, view=view, sections=rpt.SECTIONS,
                           columns=dict(rpt.COLUMNS), rates={k: label for k, _n, _d, label in rpt.RATES},
                           chart=rpt.chart(view), threshold=rpt.THRESHOLD, view_names=rpt.VIEW_NAMES,
                           percent=rpt.percent, hours_text=rpt.hours_text, goals=rpt.GOALS)


@bp.route("/report.csv", methods=["GET"])
@launch_required
def csv_export() -> Response:
    _require_program_manager()
    view = _view(get_session(), request.args.get("view"), request.args.get("period"), _now())
    body = rpt.csv_text(view)
    name = f"{view.period.kind}-{view.period.key}"
    record_audit("export", patient={}, detail=f"program report CSV {_audit_name(view.period)}")
    return Response(body, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="program-report-{name}.csv"'})


@bp.cli.command("report")
@click.option("--view", "kind", type=click.Choice(pd.KINDS), default=pd.MONTH, show_default=True)
@click.option("--period", help="YYYY-MM (month, or the last month of 12), YYYY-Q1..Q4 (quarter)")
@click.option("--month", help="YYYY-MM: the month view of that month")
@click.option("--ehr", "ehr_id", help="one EHR's numbers (an id in the deployment's ehrs; without one, an iss); "
                                     "default: every EHR of the deployment")
def report_command(kind: str, period: str | None, month: str | None, ehr_id: str | None) -> None:
    """Print one closed period of the program report as CSV (the numbers of the report page)."""
    key = period or month
    now = _now()
    chosen = pd.parse(kind, key) if key else pd.latest(kind, now)
    if chosen is None:
        raise click.BadParameter("use YYYY-MM, or YYYY-Q1 to YYYY-Q4 for a quarter", param_hint="--period")
    if not pd.closed(chosen, now):
        raise click.BadParameter("this period has not closed yet", param_hint="--period")
    app = current_app._get_current_object()
    deployment = settings_of(app)
    named = ehr_named(ehr_id, deployment) if ehr_id else None
    if ehr_id and named is None:
        raise click.BadParameter("not an EHR of this deployment", param_hint="--ehr")
    with session_scope(app) as db:
        view = rpt.build(db, chosen, now, ms.DueRule.from_config(app.config), deployment,
                         ms.EhrFilter(named.id, named.iss) if named is not None else None)
        click.echo(rpt.csv_text(view), nl=False)
