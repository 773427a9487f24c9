"""The worker's commands: ``flask outbox-worker`` (the long-running worker every deployment runs) and
``flask outbox-run-once`` (one batch, or ``--drain``: cron and tests)."""

from __future__ import annotations

import signal
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from config.current import settings_of
from smart_app.outbox.worker import OutboxWorker


def init_app(app: Flask) -> None:
    app.cli.add_command(outbox_run_once)
    app.cli.add_command(outbox_worker)


def _worker() -> OutboxWorker:
    app = current_app._get_current_object()
    return OutboxWorker(app, client_for=None, timeout=settings_of(app).http_timeout_seconds)


@click.command("outbox-run-once")
@click.option("--drain", is_flag=True, help="Keep going until nothing is pending (or --max-seconds).")
@click.option("--max-seconds", default=60.0, show_default=True)
@with_appcontext
def outbox_run_once(drain: bool, max_seconds: float) -> None:
    """Send the due chart writes once (cron-friendly)."""
    worker = _worker()
    stats = worker.drain(max_seconds=max_seconds) if drain else worker.run_once()
    click.echo(f"claimed={stats.claimed} written={stats.written} retrying={stats.retrying} "
               f"failed={stats.failed} deferred={stats.deferred} label_flags={stats.label_flags}")


@click.command("outbox-worker")
@click.option("--idle-sleep", default=1.0, show_default=True, help="Seconds to wait when nothing is due.")
@with_appcontext
def outbox_worker(idle_sleep: float) -> None:
    """Run the outbox worker until interrupted (run several: rows are claimed, never sent twice)."""
    worker = _worker()
    click.echo(f"outbox worker {worker.worker_id} running")

    def _stop(_signum: int, _frame: Any) -> None:
        # SIGTERM (systemd, containers): finish the send in flight, give the rest of the claim back, exit.
        worker.stopping.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    worker.loop(idle_sleep=idle_sleep)
    click.echo("stopped")
