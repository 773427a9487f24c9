"""Memory and start-up: create_app() time and RSS in a fresh process, and the app under gunicorn (4 workers)
with and without the documented preload set-up (config/gunicorn.conf.py: preload_app + gc.freeze), as RSS
per worker and PSS of the whole server (PSS counts a page shared by k processes as 1/k in each).
Targets (printed, never asserted): worker RSS <= 100 MB with the default directory; create_app() with its warm-up
<= 0.6 s of CPU, and so the whole start (import, create_app, warm-up: the imports create_app made before the
renovation are made by `import smart_app` now), each beside the figure before the renovation (benchmarks/targets.py)
and the machine's load (the machine is shared; wall time is printed beside it). Warm-up runs inside create_app, as
in a production start. The page templates are compiled ahead into a folder of the bench's own, as the image's
build does (`flask --app smart_app:create_build_app compile-templates`,
docs/decisions/0019-templates-compiled-at-build.md); a start without that folder compiles every template, printed
beside it.

Every process runs with its modules' bytecode compiled, as an installed wheel has it (pip compiles at install):
with PYTHONDONTWRITEBYTECODE set, as in some development shells, the project's own ~60 modules were compiled
from source at every start (0.16 s of create_app). The bytecode goes to a temporary PYTHONPYCACHEPREFIX (nothing
is written into the tree), filled by one unmeasured start."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from benchmarks import targets
from benchmarks.bench_load import BIN, ROOT, free_port, wait_http

CHILD = """
import os
import time
t0, c0 = time.perf_counter(), time.process_time()
from smart_app import create_app
t1, c1 = time.perf_counter(), time.process_time()
from smart_app.ops import warmup
spent = []
run = warmup.warm_up
def timed(app):
    c = time.process_time()
    run(app)
    spent.append(time.process_time() - c)
warmup.warm_up = timed
# warm-up inside, as a production start runs it (collector paused, frozen after); the compiled templates' folder
app = create_app({"TEMPLATE_CACHE_DIR": os.environ["BENCH_TEMPLATE_CACHE_DIR"]})
t2, c2 = time.perf_counter(), time.process_time()
rss = int([l for l in open('/proc/self/status') if l.startswith('VmRSS')][0].split()[1]) / 1024
print(f"{c1 - c0:.3f} {c2 - c1 - spent[0]:.3f} {spent[0]:.3f} {rss:.0f} {t2 - t1:.3f}")
"""


def smaps(pid: int) -> tuple[float, float]:
    """(RSS MB, PSS MB) of one process."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            rss = int(line.split()[1])
        elif line.startswith("Pss:"):
            pss = int(line.split()[1])
    return rss / 1024, pss / 1024


def env(tmp: Path) -> dict[str, str]:
    from cryptography.fernet import Fernet

    out = {**os.environ, "PYTHONPATH": str(ROOT), "DATABASE_URL": f"sqlite:///{tmp / 'mem.db'}",
           "SECRET_KEY": secrets.token_urlsafe(32), "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
           "IPV_DEPLOYMENT": "sandbox", "IPV_MODE": "demo",
           "PYTHONPYCACHEPREFIX": str(tmp / "pycache")}  # bytecode: see the docstring
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    return out


def server(tmp: Path, preload: bool) -> tuple[float, float, float]:
    """(max worker RSS, mean worker RSS, total PSS of master + workers) after each worker served requests."""
    port = free_port()
    args = [str(BIN / "gunicorn"), "-b", f"127.0.0.1:{port}", "-w", "4"]
    args += ["-c", str(ROOT / "config" / "gunicorn.conf.py")] if preload else ["--worker-class", "gthread"]
    p = subprocess.Popen([*args, "smart_app:create_app()"], cwd=ROOT, env=env(tmp), stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/.well-known/jwks.json", 90)
        for _ in range(200):  # every worker serves some pages
            requests.get(f"http://127.0.0.1:{port}/.well-known/jwks.json", timeout=10)
        time.sleep(1)
        kids = [int(x) for x in subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True,
                                               text=True).stdout.split()]
        workers = [smaps(k) for k in kids]
        master = smaps(p.pid)
        return max(w[0] for w in workers), sum(w[0] for w in workers) / len(workers), \
            master[1] + sum(w[1] for w in workers)
    finally:
        p.terminate()
        p.wait(timeout=30)


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)

        def fresh(**extra: str) -> list[str]:
            return subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env={**env(tmp), **extra},
                                  capture_output=True, text=True, check=True).stdout.split()

        compiled = tmp / "compiled-templates"  # as the image's build makes it
        subprocess.run([str(BIN / "flask"), "--app", "smart_app:create_build_app", "compile-templates", "--into",
                        str(compiled)], cwd=ROOT, env=env(tmp), capture_output=True, check=True)
        runs = [fresh(BENCH_TEMPLATE_CACHE_DIR=str(compiled)) for _ in range(4)][1:]  # 1st: compiles the modules
        imp, create, warm, rss, wall = (sorted(float(r[i]) for r in runs)[1] for i in range(5))
        # A start without the build's folder (an empty one each time): warm-up compiles every page template.
        cold = sorted(float(fresh(BENCH_TEMPLATE_CACHE_DIR=tempfile.mkdtemp(dir=tmp))[2]) for _ in range(3))[1]
        print(f"fresh process (median of 3, CPU time; {targets.load()}):")
        print(f"  import smart_app {imp:.2f} s ({targets.before('import_s', ' s')}); create_app() {create:.2f} s "
              f"({targets.before('create_app_s', ' s')}; wall {wall:.2f} s); warm-up {warm:.2f} s with the templates "
              f"compiled at build ({cold:.2f} s compiling them at start); RSS {rss:.0f} MB")
        print(f"  create_app() with its warm-up: {targets.judged('create_and_warm_s', create + warm, ' s')}; "
              f"compiling the templates at start {targets.judged('create_and_warm_s', create + cold, ' s')}")
        # What create_app imported at fb2f31d, `import smart_app` imports now: the whole start is the comparable figure.
        print(f"  import + create_app + warm-up: {targets.judged('start_s', imp + create + warm, ' s')} "
              f"({targets.before('start_s', ' s')}); compiling the templates at start "
              f"{targets.judged('start_s', imp + create + cold, ' s')}")
        for preload in (False, True):
            worst, mean, pss = server(tmp, preload)
            name = "preload + gc.freeze (config/gunicorn.conf.py)" if preload else "no preload"
            was = f"; {targets.before('worker_rss_mb', ' MB', fmt='.0f')}" if preload else ""
            print(f"gunicorn -w 4, {name}: worker RSS max {targets.judged('worker_rss_mb', worst, ' MB', fmt='.0f')}, "
                  f"mean {mean:.0f} MB{was}; total PSS {pss:.0f} MB; {targets.load()}")


if __name__ == "__main__":
    main()
