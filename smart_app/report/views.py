"""Program report for the ``program_manager`` role: per site and month, screens offered, completed,
declined, positive, urgent, referrals made and contacted within 24 h / 72 h, warm hand-offs offered and
completed (spoke with an advocate at the visit), by instrument and
language, and check-in cards shown and accepted. Counts come only from the de-identified event table
(smart_app/report/events.py) and are suppressed below 11 (smart_app/report/tables.py). No patient is shown or linked.

``/l/<lid>/report?month=YYYY-MM`` page with server-rendered SVG charts (no JavaScript),
``/l/<lid>/report.csv?month=YYYY-MM`` the same numbers as CSV, ``flask --app smart_app report --month
YYYY-MM`` the same CSV on stdout.
"""

from __future__ import annotations

import click
from flask import Blueprint, Response, abort, current_app, g, render_template, request

from smart_app.launch.roles import PROGRAM_MANAGER, user_roles
from smart_app.launch.state import launch_required
from smart_app.ops.audit import record_audit
from smart_app.report import tables as rpt
from smart_app.report.events import month_of
from smart_app.store.db import get_session, session_scope

bp = Blueprint("report", __name__, template_folder="templates", url_prefix="/l/<lid>", cli_group=None)


def _require_program_manager() -> None:
    # The app roles the launch's callback mapped (smart_app/launch/roles.py), as every feature reads them.
    if PROGRAM_MANAGER not in user_roles(g.launch.context.get("user") or {}, current_app.config["DEPLOYMENT"]):
        abort(403, description="The program report is only for program managers. "
                               "Ask your administrator if you need access.")


def _month() -> str:
    month = request.args.get("month") or month_of()
    if not rpt.valid_month(month):
        abort(400, description="Choose a month as YYYY-MM.")
    return month


@bp.route("/report", methods=["GET"])
@launch_required
def page() -> str:
    _require_program_manager()
    month = _month()
    report = rpt.build(rpt.raw_counts(get_session(), month), month)
    record_audit("view_report", patient={}, detail=month)  # no patient data in the report
    return render_template("report/index.html", lid=g.launch.id, report=report, measures=rpt.MEASURES,
                           journey=rpt.JOURNEY, chart=rpt.chart_svg(report), threshold=rpt.THRESHOLD)


@bp.route("/report.csv", methods=["GET"])
@launch_required
def csv_export() -> Response:
    _require_program_manager()
    month = _month()
    body = rpt.csv_text(rpt.build(rpt.raw_counts(get_session(), month), month))
    record_audit("export", patient={}, detail=f"program report CSV {month}")
    return Response(body, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="program-report-{month}.csv"'})


@bp.cli.command("report")
@click.option("--month", required=True, help="YYYY-MM")
def report_command(month: str) -> None:
    """Print the program report for a month as CSV (the numbers of the report page)."""
    if not rpt.valid_month(month):
        raise click.BadParameter("use YYYY-MM", param_hint="--month")
    with session_scope(current_app._get_current_object()) as db:
        click.echo(rpt.csv_text(rpt.build(rpt.raw_counts(db, month), month)), nl=False)
