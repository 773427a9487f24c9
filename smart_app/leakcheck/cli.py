"""``flask --app smart_app leak-check --file leak-check.yaml``: the go-live check that nothing the app writes reaches
the patient's portal or a proxy (DEPLOY.md). Exit 0: nothing came back; 1: something did (each named); 2: the check
refused to run or could not decide (a report that proves nothing is never a pass)."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from config.files import SettingsError
from config.leakcheck import read_leak_check, read_token
from smart_app.leakcheck.check import Inconclusive, Refused, Report, run

LEAKED, CANNOT = 1, 2


def init_app(app: Flask) -> None:
    app.cli.add_command(leak_check)


def _print(report: Report) -> None:
    for item in report.written:
        click.echo(f"wrote {item.kind}/{item.id}")
    for line in report.not_written:
        click.echo(f"not written: {line}")
    for line in report.unreadable:
        click.echo(f"not searchable: {line}")
    for seen in report.seen:
        click.echo(f"LEAK {seen.viewer}: {seen.reference} ({seen.how}): {seen.text}")
    for line in report.left:
        click.echo(f"left in the test patient's chart: {line}")


@click.command("leak-check")
@click.option("--file", "path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="The leak-check file: the test patient, the patient's and a proxy's portal sign-ins (DEPLOY.md).")
@with_appcontext
def leak_check(path: str) -> None:
    """Write a test referral as the app does, read the chart as the test patient and as a proxy, name what came
    back. Exit 0: nothing; 1: something leaked; 2: refused or inconclusive."""
    try:
        spec, base = read_leak_check(path)
        tokens = {"patient": read_token(base, spec.patient_token_file)}
        if spec.proxy_token_file:
            tokens["proxy"] = read_token(base, spec.proxy_token_file)
        clinician = read_token(base, spec.clinician_token_file) if spec.clinician_token_file else None
        report = run(current_app._get_current_object(), spec, tokens, clinician)
    except SettingsError as exc:
        click.echo("\n".join(f"refused: {p}" for p in exc.problems))
        raise SystemExit(CANNOT) from None
    except (Refused, Inconclusive) as exc:
        click.echo(f"{'refused' if isinstance(exc, Refused) else 'inconclusive'}: {exc}")
        raise SystemExit(CANNOT) from None
    _print(report)
    viewers = " and ".join(tokens)
    if report.leaked:
        click.echo(f"FAILED: {len(report.seen)} resource(s) of the test referral came back to the {viewers}")
        raise SystemExit(LEAKED)
    unchecked = f"; {len(report.not_written)} not written, so not checked (above)" if report.not_written else ""
    click.echo(f"passed: nothing of the test referral ({len(report.written)} resource(s) written) came back to the "
               f"{viewers}{unchecked}")
