"""gunicorn settings for the app: ``gunicorn -c config/gunicorn.conf.py 'smart_app:create_app()'``.

preload_app: the master builds the app once — settings, instruments, the referral directory and its index,
the FHIR models (smart_app/warmup.py) — and the workers share those pages copy-on-write. gc.freeze() just
before forking moves everything loaded so far out of the cyclic collector's reach, so a worker's collections
never touch (and so never copy) the shared pages. `make bench` (bench_memory) measures both set-ups.
Every value can be overridden on the command line or with GUNICORN_CMD_ARGS.
"""

import gc
import os

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "4"))
worker_class = "gthread"  # a launch waits on the EHR: threads keep a worker useful meanwhile
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = 30  # no request waits on the EHR for a chart write (the outbox worker sends them)
graceful_timeout = 30
preload_app = True


def pre_fork(server, worker):  # noqa: ARG001 (gunicorn's hook signature)
    gc.freeze()


def child_exit(server, worker):  # noqa: ARG001 (gunicorn's hook signature)
    # prometheus_client multiprocess mode (PROMETHEUS_MULTIPROC_DIR set, emptied before start): a dead
    # worker's live gauges are dropped; its counters stay summed (smart_app/observability.py).
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
