"""gunicorn settings for the app: ``gunicorn -c config/gunicorn.conf.py 'smart_app:create_app()'``.

preload_app: the master builds the app once — settings, instruments, the referral directory and its index,
the FHIR models (smart_app/ops/warmup.py) — and the workers share those pages copy-on-write. gc.freeze() just
before forking moves everything loaded so far out of the cyclic collector's reach, so a worker's collections
never touch (and so never copy) the shared pages. `make bench` (bench_memory) measures both set-ups.
Workers: one per CPU this process may use (its CPU affinity and its cgroup's CPU quota, so a container limited
to 2 CPUs on a large host gets 2), at least 2 so one can restart while the other serves, and at most 4 (each
worker may hold two PostgreSQL connections per thread: DEPLOY.md sizes the server from workers x threads). Threads bring
every instance to about 16 requests at once, as 4 x 4 did: a launch waits on the EHR, and a waiting thread holds
no CPU.
Measured on 2 CPUs (bench_load at N = 100, three interleaved rounds of 3 runs): 4 x 4 cost 2.6 ms of CPU per
request and served 378-403 requests a second; 2 x 8 cost 2.1-2.5 ms and served 427-448 (four processes' working
sets on two cores): more workers than CPUs buys nothing.

Every value can be overridden on the command line, with GUNICORN_WORKERS / GUNICORN_THREADS, or with
GUNICORN_CMD_ARGS.
"""

import gc
import math
import os
from pathlib import Path


def cpus_available(cgroup_root: str = "/sys/fs/cgroup", proc_cgroup: str = "/proc/self/cgroup") -> int:
    """CPUs this process may run on: its affinity, lowered by the tightest cgroup CPU quota above it (v2
    ``cpu.max`` of its own cgroup and every parent, as a container limit or systemd's CPUQuota= on the service
    or its slice sets it; v1 ``cpu.cfs_quota_us``)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    root = Path(cgroup_root)
    try:  # cgroup v2: "0::/system.slice/ipv-app@1.service" (a container's namespace shows "0::/")
        own = next((line.split("::", 1)[1].strip() for line in Path(proc_cgroup).read_text().splitlines()
                    if line.startswith("0::")), "/")
    except OSError:
        own = "/"
    parts = [p for p in own.split("/") if p]
    v2 = [(root.joinpath(*parts[:i]) / "cpu.max", None) for i in range(len(parts), -1, -1)]
    v1 = [(root / "cpu" / "cpu.cfs_quota_us", root / "cpu" / "cpu.cfs_period_us")]
    for quota_file, period_file in v2 + v1:
        try:
            if period_file is None:
                quota, period = quota_file.read_text().split()[:2]
            else:
                quota, period = quota_file.read_text().strip(), period_file.read_text().strip()
            if quota not in ("max", "-1") and int(period) > 0:
                cpus = min(cpus, max(1, math.ceil(int(quota) / int(period))))
        except (OSError, ValueError):
            continue
    return cpus


def default_workers() -> int:
    return min(4, max(2, cpus_available()))

bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("GUNICORN_WORKERS") or default_workers())
worker_class = "gthread"  # a launch waits on the EHR: threads keep a worker useful meanwhile
threads = int(os.environ.get("GUNICORN_THREADS") or max(4, 16 // workers))
# The app sizes its per-EHR bulkhead from the threads it has (config/settings.py, ehr_call_limits): gunicorn puts
# raw_env in the environment before it loads the app (preload), so the app reads the figure chosen here.
raw_env = [f"GUNICORN_THREADS={threads}"]
timeout = 30  # no request waits on the EHR for a chart write (the outbox worker sends them)
graceful_timeout = 30
preload_app = True
# When an access log is switched on (--access-logfile): the path without its query string, no referrer, so
# /callback?code=…&state=… and other queries never reach the disk (%(U)s is the path, %(r)s would be the whole line).
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)s "%(a)s" %({x-request-id}i)s'


def on_starting(server):
    # The bind and the worker count are final only here (command line over this file), before any socket is
    # opened: the demo never listens where other hosts reach it, and memory:// rate limits are never split
    # across workers in production (config/checks.py, serving_problems).
    from config.checks import errors, serving_problems
    from config.settings import EnvironmentFields, read_environment

    env = EnvironmentFields(**read_environment())
    problems = errors(serving_problems(env.ipv_mode, env.ratelimit_storage_uri, server.cfg.workers,
                                      list(server.cfg.address)))
    if problems:
        lines = "\n".join(f"  - {p}" for p in problems)
        server.log.error("refusing to start: %d configuration problem(s):\n%s", len(problems), lines)
        raise SystemExit(1)


def pre_fork(server, worker):  # noqa: ARG001 (gunicorn's hook signature)
    gc.freeze()


def child_exit(server, worker):  # noqa: ARG001 (gunicorn's hook signature)
    # prometheus_client multiprocess mode (PROMETHEUS_MULTIPROC_DIR set, emptied before start): a dead
    # worker's live gauges are dropped; its counters stay summed (smart_app/ops/observability.py).
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
