"""Load: N concurrent clinicians doing the whole journey from the EHR launch against the app under gunicorn, with
PostgreSQL, the sandbox EHR and an outbox worker as separate processes — and a hello-world Flask app under the same
gunicorn settings in the same run, printed as ratios.

Each clinician starts where a clinician does, in the EHR: the sandbox EHR's simulator makes a launch for one of the
seed patients ("Launch app"), the browser goes to the app's /launch, on to the EHR's authorize endpoint and back to
/callback (the app exchanges the code for a token and reads the context from the sandbox EHR, its own process), then
walks gate -> instrument -> result -> referrals -> consent -> confirmation by submitting the forms the pages render
(CSRF token and all). Requests to the app are timed; the EHR's own (simulator, authorize) are not counted.

Targets (printed as pass/miss, never asserted): at N = 100, p95 <= 5x hello and throughput >= 0.3x hello, judged
on the median of ``--reps`` runs at each N (3 by default; the spread is printed beside). Each run also prints where
the cores went, per process: the app (its workers and its PostgreSQL backends, found by application_name, so other
databases on the server are not counted) and the harness (sandbox EHR, outbox worker, this load generator), and
what other processes on the shared machine took; then ``--profile`` journeys of one clinician alone give the CPU
per request kind (app, its PostgreSQL, the sandbox EHR, the client) to the nanosecond. The sandbox EHR runs under
gunicorn (one gthread worker), not ``python -m sandbox_ehr``'s development server (BENCH_SANDBOX=dev for an A/B):
the harness should cost the cores as little as it can. The clients are plain
http.client connections with keep-alive and a cookie jar (``Browser``): requests cost several times the CPU of a
hello-world page per call, so the load generator took a large share of the cores, most of all against hello-world.
Both apps meet the same load: N
clients released at one instant, hello-world's looping for as long as the clinicians' run took, and only after the
outbox worker has sent the run's writes (so neither is measured on cores the other's traffic is still using); the
runs alternate between the two apps. Every clinician comes from this one address, so the bench's deployment lifts
the per-address limits on /launch and /callback (a hospital's clinicians come from many), and its one EHR may have as
many calls in flight as a worker's EHR threads (the default keeps half for a second EHR).
Needs PostgreSQL (TEST_DATABASE_URL, default the machine's 127.0.0.1:5432/test); prints why when it is missing.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import resource
import runpy
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import requests

from benchmarks import targets
from config.settings import THREADS_KEPT_FROM_EHR_CALLS

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG = os.environ.get("TEST_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
HELLO = ROOT / "benchmarks" / "hello_app.py"
# The documented set-up (gthread workers per CPU x threads, preload, gc.freeze before fork), for both apps.
GUNICORN = ["-c", str(ROOT / "config" / "gunicorn.conf.py")]
NO_ANSWER = 599  # recorded for a request the server refused or cut (no HTTP status)
# What a browser loads with a page: its stylesheets and scripts (the app's pages name them with these two forms).
SUBRESOURCE = re.compile(r'<link rel="stylesheet" href="([^"]+)"|<script src="([^"]+)"')
ASSET, FROM_CACHE = "asset", "from cache"  # page names in Clinician.assets: "asset app.css", "from cache"
PATIENTS = [("pat-alice", "enc-alice-bwh"), ("pat-carmen", "enc-carmen-sjphc"), ("pat-joana", "enc-joana-chelsea")]


@contextmanager
def postgres_schema() -> Iterator[str | None]:
    """A URL to a fresh schema on the benches' PostgreSQL (TEST_DATABASE_URL), dropped afterwards; None when the
    server does not answer."""
    from sqlalchemy import create_engine, text

    try:
        admin = create_engine(PG)
        with admin.connect() as conn:
            conn.execute(text("select 1"))
    except Exception:  # noqa: BLE001 - the caller says PostgreSQL was not measured
        yield None
        return
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        sep = "&" if "?" in PG else "?"
        yield f"{PG}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, seconds: float = 60) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def process_tree(pid: int) -> list[int]:
    """A process and its children (gunicorn's master and workers)."""
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    except OSError:
        out = []
    return [pid, *(int(p) for p in out)]


def stat_cpu(pids: list[int]) -> float:
    """CPU seconds of these processes so far (every thread, ended ones too; clock ticks)."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


def process_cpu(pid: int) -> float:
    """CPU seconds of a process and all its children (gunicorn master + workers)."""
    return stat_cpu(process_tree(pid))


def exact_cpu(pids: list[int]) -> float:
    """CPU seconds of the live threads of these processes, to the nanosecond (schedstat): a single request's cost
    is below the clock tick ``stat_cpu`` counts in. Threads that ended are not counted: use it on servers whose
    threads live as long as they do (gunicorn's gthread pools, PostgreSQL backends)."""
    total = 0
    for p in pids:
        for task in Path(f"/proc/{p}/task").glob("*/schedstat"):
            try:
                total += int(task.read_text().split()[0])
            except (OSError, IndexError, ValueError):
                continue
    return total / 1e9


class Answer:
    """An HTTP response as the journey reads it."""

    __slots__ = ("status_code", "headers", "content")

    def __init__(self, status: int, headers: Any, content: bytes):
        self.status_code, self.headers, self.content = status, headers, content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


class Browser:
    """One browser on http.client: a keep-alive connection and a cookie jar per origin, redirects never followed.

    requests costs several times more CPU per call than the servers under test spend on a hello-world page, so with
    it the load generator took a large share of the two cores (most of all against hello-world); this is what a
    browser does and little else."""

    def __init__(self, timeout: float = 60):
        self.timeout = timeout
        self.conns: dict[str, http.client.HTTPConnection] = {}
        self.jars: dict[str, dict[str, str]] = defaultdict(dict)
        self.cache: dict[str, tuple[float, str]] = {}  # URL -> (fresh until, ETag): the HTTP cache

    def keep(self, url: str, answer: Answer) -> None:
        """Keep what a response lets a browser keep: fresh for its max-age, then revalidated with its ETag."""
        control = (answer.headers.get("Cache-Control") or "").lower()
        if "no-store" in control or answer.status_code not in (200, 304):
            self.cache.pop(url, None)
            return
        age = re.search(r"max-age=(\d+)", control)
        fresh = time.monotonic() + int(age.group(1)) if age and "no-cache" not in control else 0.0
        self.cache[url] = (fresh, answer.headers.get("ETag") or self.cache.get(url, (0.0, ""))[1])

    def request(self, method: str, url: str, data: dict[str, Any] | None = None,
                extra: dict[str, str] | None = None) -> Answer:
        parts = urlsplit(url)
        origin, target = parts.netloc, (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = {"Accept-Encoding": "identity", **(extra or {})}
        jar = self.jars[origin]
        if jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in jar.items())
        body = None
        if data is not None:
            body = urlencode(data, doseq=True).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        for attempt in (1, 2):
            conn = self.conns.get(origin)
            reused = conn is not None
            if conn is None:
                conn = self.conns[origin] = http.client.HTTPConnection(origin, timeout=self.timeout)
            try:
                conn.request(method, target, body=body, headers=headers)
                resp = conn.getresponse()
                content = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                conn.close()
                del self.conns[origin]
                if reused and attempt == 1:  # the server closed an idle keep-alive connection: a new one
                    continue
                raise
            except (OSError, http.client.HTTPException):
                conn.close()
                del self.conns[origin]
                raise
            break
        for cookie in resp.headers.get_all("Set-Cookie") or ():
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if value and "max-age=0" not in cookie.lower():
                jar[name.strip()] = value
            else:
                jar.pop(name.strip(), None)
        if resp.will_close:
            conn.close()
            del self.conns[origin]
        return Answer(resp.status, resp.headers, content)

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()


class _Forms(HTMLParser):
    """The page's POST forms: action and the values a browser would submit by default."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self._form: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form" and a.get("method", "get").lower() == "post":
            self._form = {"action": a.get("action", ""), "fields": {}, "radios": defaultdict(list)}
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name"):
            kind = a.get("type", "text").lower()
            if kind in ("radio",):
                self._form["radios"][a["name"]].append(a.get("value", ""))
                if "checked" in a:
                    self._form["fields"][a["name"]] = a.get("value", "")
            elif kind == "checkbox":
                if "checked" in a:
                    self._form["fields"][a["name"]] = a.get("value", "on")
            elif kind not in ("submit", "button", "image", "reset"):
                self._form["fields"][a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def form_on(page: str, action_suffix: str) -> dict[str, Any]:
    parser = _Forms()
    parser.feed(page)
    for form in parser.forms:
        if form["action"].split("?")[0].endswith(action_suffix):
            return form
    raise LookupError(f"no POST form for {action_suffix}")


def form_data(page: str, action: str, values: dict[str, Any], pick: int = 0) -> dict[str, Any]:
    """What a browser posts with the page's form for ``action``: its fields and defaults (CSRF token included),
    option ``pick`` of a radio group without a default, then ``values``."""
    form = form_on(page, action)
    data = dict(form["fields"])
    for name, options in form["radios"].items():
        data.setdefault(name, options[pick])
    data.update(values)
    return data


# How a journey calls: ``ask(page, method, path, data)`` asks the app (``path`` from its root) and returns the
# response (``status_code``, ``headers``, ``text``, ``json()``); ``ehr(method, url, data)`` asks the EHR's simulator
# and authorize endpoint; neither follows redirects. ``get(page, path)`` returns a page's HTML as a browser loads it.
Ask = Callable[[str, str, str, dict[str, Any] | None], Any]


def launch_from_ehr(ehr: Callable[[str, str, dict[str, Any] | None], Any], ask: Ask, sandbox: str, iss: str,
                    visit: tuple[str, str]) -> str:
    """The EHR launch: the simulator's "Launch app" for ``visit`` (patient, encounter), the app's /launch, the EHR's
    authorize, the app's /callback. Returns the launch id, or "" when the app did not send the browser on to the EHR
    or the callback did not land in the app."""
    patient, encounter = visit
    at_ehr = ehr("POST", sandbox + "/ehr/launch", {"practitioner": "prac-avery", "patient": patient,
                                                   "encounter": encounter, "need_patient_banner": "1"})
    launch = parse_qs(urlsplit(at_ehr.headers.get("Location", "")).query).get("launch", [""])[0]
    to_ehr = ask("launch", "GET", f"/launch?iss={quote(iss)}&launch={quote(launch)}", None)
    if to_ehr.status_code != 302:
        return ""
    back = ehr("GET", to_ehr.headers["Location"], None)  # the EHR's authorize
    landed = ask("callback", "GET", "/callback?" + urlsplit(back.headers.get("Location", "")).query, None)
    match = re.search(r"/l/([^/?#]+)/", landed.headers.get("Location", ""))
    return match.group(1) if match else ""


def walk_to_consent(lid: str, get: Callable[[str, str], str], ask: Ask) -> None:
    """From launch ``lid``'s gate to the consent's confirmation by submitting the forms the pages render (CSRF token
    and all): gate, a positive screen, the danger check when the result asks it, referrals, consent to a note in the
    chart, confirmation. Each request is named by its page, as ``Clinician.record`` names it."""
    base = f"/l/{lid}"

    def submit(page: str, html: str, action: str, values: dict[str, Any], pick: int = 0) -> Any:
        return ask(page, "POST", f"{base}/{action}", form_data(html, action, values, pick))

    gate = get("gate", f"{base}/")
    submit("gate POST", gate, "gate", {"alone": "yes", "no_family_interpreter": "yes", "action": "start"})
    screen = get("screen", f"{base}/screen")
    # The default instrument's most frequent answer to every question: a positive screen, as the form codes it.
    submit("screen POST", screen, "screen", {}, pick=-1)
    result = get("result", f"{base}/result")
    if "data-instrument" in result:  # the danger check is asked on the result page, posted like a screen
        submit("danger POST", result, "screen", {})
        get("result", f"{base}/result")
    get("referrals", f"{base}/referrals")
    consent = get("consent", f"{base}/consent")
    # Consent = payload: the page's preview gives the digest of exactly these choices, then consent with it.
    choices = {"shown": "1", "channel": "none", "resources": "DocumentReference",
               "csrf_token": form_on(consent, "consent")["fields"].get("csrf_token", "")}
    preview = ask("consent preview", "POST", f"{base}/consent/preview", choices)
    digest = preview.json().get("digest", "") if preview.status_code == 200 else ""
    # The seed visits are referred again and again: the clinician says so.
    ask("consent POST", "POST", f"{base}/consent", {**choices, "consent": "yes", "digest": digest,
                                                     "second_referral": "yes"})
    get("done", f"{base}/consent/done")


class Clinician:
    """One browser: its own connections, cookies and cache, recording (page, seconds, status) for every page it asks
    the app for, and in ``assets`` every stylesheet and script the pages name that it fetches as a browser does."""

    def __init__(self, base: str, sandbox: str, iss: str, visit: tuple[str, str], record: list[tuple[str, float, int]],
                 assets: list[tuple[str, float, int]] | None = None):
        self.base, self.sandbox, self.iss, self.visit, self.record = base, sandbox, iss, visit, record
        self.assets = record if assets is None else assets
        self.lid = ""
        self.http = Browser()

    def _timed(self, page: str, method: str, path: str, data: dict[str, Any] | None = None,
               extra: dict[str, str] | None = None) -> Answer:
        record = self.assets if page.startswith(ASSET) else self.record
        t0 = time.perf_counter()
        try:
            r = self.http.request(method, self.base + path, data, extra)
        except (OSError, http.client.HTTPException):  # refused or cut by the server: an error of the run
            record.append((page, time.perf_counter() - t0, NO_ANSWER))
            raise
        record.append((page, time.perf_counter() - t0, r.status_code))
        return r

    def get(self, page: str, path: str) -> str:
        html = self._timed(page, "GET", path).text
        self.subresources(html)
        return html

    def subresources(self, html: str) -> None:
        """The page's stylesheets and scripts as a browser loads them: from its cache while fresh, revalidated
        with If-None-Match when it has an ETag, else fetched again."""
        for url in (unescape(link or script) for link, script in SUBRESOURCE.findall(html)):
            fresh, etag = self.http.cache.get(url, (0.0, ""))
            if fresh > time.monotonic():
                self.assets.append((FROM_CACHE, 0.0, 0))
                continue
            name = f"{ASSET} {urlsplit(url).path.rsplit('/', 1)[-1]}"
            self.http.keep(url, self._timed(name, "GET", url, extra={"If-None-Match": etag} if etag else None))

    def launch(self) -> bool:
        """The EHR launch (the EHR's requests untimed); True when the callback landed in the app (the launch id is
        kept)."""
        self.lid = launch_from_ehr(self.http.request, self._timed, self.sandbox, self.iss, self.visit)
        return bool(self.lid)

    def journey(self, start: threading.Barrier | None = None) -> None:
        if start is not None:
            start.wait()
        try:
            self._walk()
        except (OSError, http.client.HTTPException):
            pass  # recorded as NO_ANSWER where it happened
        finally:
            self.http.close()

    def _walk(self) -> None:
        if self.launch():
            walk_to_consent(self.lid, self.get, self._timed)


def hello_journey(base: str, record: list[tuple[str, float, int]], seconds: float,
                  start: threading.Barrier | None = None) -> None:
    """GET hello-world again and again for ``seconds`` (as long as the clinicians' run took)."""
    browser = Browser()
    if start is not None:
        start.wait()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        try:
            status = browser.request("GET", base + "/").status_code
        except (OSError, http.client.HTTPException):  # a connection the server reset under the load: an error
            status = NO_ANSWER
        record.append(("hello", time.perf_counter() - t0, status))
    browser.close()


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")


class Stack:
    """PostgreSQL schema, sandbox EHR, the app under gunicorn and one outbox worker, all separate processes."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self._schema = postgres_schema()

    def __enter__(self) -> Stack:
        from sqlalchemy import create_engine

        self.db_url = self._schema.__enter__()
        if self.db_url is None:
            raise RuntimeError("PostgreSQL at TEST_DATABASE_URL does not answer")
        self.engine = create_engine(self.db_url)  # the bench's own reads (outbox drained?)
        self.sandbox_port, self.app_port, self.hello_port = free_port(), free_port(), free_port()
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.iss = self.sandbox_url + "/fhir"
        self.app_url = f"http://127.0.0.1:{self.app_port}"
        self.sandbox_db = str(self.tmp / "sandbox.db")
        # Each process's PostgreSQL connections carry its name, so the bench counts its own backends' CPU.
        self.pg_name = f"ipv-bench-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ, "PYTHONPATH": str(ROOT),
            "DATABASE_URL": f"{self.db_url}&application_name={self.pg_name}-app",
            "SECRET_KEY": secrets.token_urlsafe(32), "TOKEN_ENCRYPTION_KEY": _fernet_key(),
            "IPV_DEPLOYMENT": str(self._deployment()), "APP_BASE_URL": self.app_url, "IPV_MODE": "demo",
        }
        self.sandbox = self._start(self._sandbox_argv())
        wait_http(self.sandbox_url + "/fhir/metadata")
        self._migrate()
        self.app = self._start([str(BIN / "gunicorn"), *GUNICORN, "-b", f"127.0.0.1:{self.app_port}",
                                "smart_app:create_app()"])
        self.hello = self._start([str(BIN / "gunicorn"), *GUNICORN, "-b", f"127.0.0.1:{self.hello_port}",
                                  "--chdir", str(HELLO.parent), "hello_app:app"])
        self.worker = self._start([str(BIN / "flask"), "--app", "smart_app", "outbox-worker"],
                                  DATABASE_URL=f"{self.db_url}&application_name={self.pg_name}-worker")
        wait_http(self.app_url + "/.well-known/jwks.json")
        wait_http(f"http://127.0.0.1:{self.hello_port}/")
        return self

    def _sandbox_argv(self) -> list[str]:
        """The sandbox EHR, one process: under gunicorn (one gthread worker) rather than ``python -m sandbox_ehr``'s
        development server, which starts a thread per connection and so a new SQLite connection per call the app
        makes; the harness's CPU is not the app's."""
        if os.environ.get("BENCH_SANDBOX") == "dev":  # for an A/B against the development server
            return [str(BIN / "python"), "-m", "sandbox_ehr", "--port", str(self.sandbox_port), "--db",
                    self.sandbox_db, "--no-faults", "--app-launch-url", self.app_url + "/launch"]
        config = {"SANDBOX_DB": self.sandbox_db, "APP_LAUNCH_URL": self.app_url + "/launch", "SANDBOX_FAULTS": False}
        return [str(BIN / "gunicorn"), "-w", "1", "-k", "gthread", "--threads", "16", "-b",
                f"127.0.0.1:{self.sandbox_port}", f"sandbox_ehr.app:create_sandbox_app({config!r})"]

    def _deployment(self) -> Path:
        """The sandbox deployment (same name: plain http to the bench's sandbox is allowed) for this sandbox's
        port, plain-HTTP cookies and quiet logs."""
        import yaml

        data = yaml.safe_load((ROOT / "config" / "deployments" / "sandbox.yaml").read_text())
        data.update(allowed_iss=[self.iss], standalone_iss=self.iss,
                    private_key_file=str(ROOT / "sandbox_ehr" / "keys" / "rs384-private.pem"))
        # One EHR serves every clinician here: its bound on calls in flight is the whole process's (the default
        # halves it so that a second slow EHR still finds room), or N launches released at once are refused.
        calls = runpy.run_path(GUNICORN[1])["threads"] - THREADS_KEPT_FROM_EHR_CALLS  # of the threads a worker has
        data["tuning"] = {**data.get("tuning", {}), "session_cookie_secure": False, "log_level": "WARNING",
                          "ratelimit_launch": "100000 per minute", "ratelimit_callback": "100000 per minute",
                          "ehr_calls_per_ehr": calls, "ehr_calls_total": calls}
        path = self.tmp / "deployment" / "sandbox.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(data))
        return path

    def _start(self, argv: list[str], **env: str) -> subprocess.Popen:
        p = subprocess.Popen(argv, cwd=ROOT, env={**self.env, **env}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(p)
        return p

    def _migrate(self) -> None:
        """The deployment's one way to make the schema, where the app has it; else create_app makes it."""
        flask = str(BIN / "flask")
        help_text = subprocess.run([flask, "--app", "smart_app", "--help"], cwd=ROOT, env=self.env,
                                   capture_output=True, text=True).stdout
        if re.search(r"^\s+db\s", help_text, re.M):
            subprocess.run([flask, "--app", "smart_app", "db", "upgrade"], cwd=ROOT, env=self.env, check=True,
                           capture_output=True)

    def __exit__(self, *exc: Any) -> None:
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        self.engine.dispose()
        self._schema.__exit__(None, None, None)


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def backends(stack: Stack, who: str) -> list[int]:
    """PostgreSQL backends serving this run's app or outbox worker (``who``, named by application_name): other
    helpers' databases on the same server are not the app's cost."""
    from sqlalchemy import text

    with stack.engine.connect() as conn:
        rows = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                            {"name": f"{stack.pg_name}-{who}"}).all()
    return [r[0] for r in rows]


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every process, ours and the other helpers')."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuSplit:
    """CPU seconds per process of the stack between two snapshots: the app under test, and the harness around it
    (sandbox EHR, outbox worker, the bench's PostgreSQL backends, this load generator, hello-world)."""

    APP = ("app", "PostgreSQL (app)")
    HARNESS = ("sandbox EHR", "outbox worker", "PostgreSQL (outbox)", "load generator")

    def __init__(self, stack: Stack):
        self.stack = stack
        self.before = self.snapshot()

    def snapshot(self) -> dict[str, dict[int, float] | float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        stack = self.stack
        return {"app": stat_cpu(process_tree(stack.app.pid)),
                "PostgreSQL (app)": {p: exact_cpu([p]) for p in backends(stack, "app")},
                "sandbox EHR": stat_cpu(process_tree(stack.sandbox.pid)),
                "outbox worker": stat_cpu(process_tree(stack.worker.pid)),
                "PostgreSQL (outbox)": {p: exact_cpu([p]) for p in backends(stack, "worker")},
                "load generator": usage.ru_utime + usage.ru_stime,
                "hello-world": stat_cpu(process_tree(stack.hello.pid)),
                "machine": machine_busy()}

    def since(self) -> dict[str, float]:
        after, out = self.snapshot(), {}
        for name, value in after.items():
            was = self.before[name]
            if isinstance(value, dict):  # per backend: one that started during the run counts from zero
                out[name] = sum(v - was.get(p, 0.0) for p, v in value.items())
            else:
                out[name] = value - was
        ours = sum(v for k, v in out.items() if k != "machine")
        out["other processes"] = max(0.0, out.pop("machine") - ours)
        return out


def describe_split(split: dict[str, float], wall: float, requests_: int, main: tuple[str, ...]) -> str:
    """One line: CPU seconds per process (share of what the machine used), the ``main`` processes first."""
    used = sum(split.values()) or 1e-9
    cores = os.cpu_count() or 1
    mine = sum(split[k] for k in main)
    parts = ", ".join(f"{k} {v:.1f} s ({100 * v / used:.0f}%)" for k, v in split.items() if v >= 0.05)
    return (f"{' + '.join(main)} {mine:.1f} s = {100 * mine / used:.0f}% of the {used:.1f} s the machine used "
            f"({100 * used / (cores * wall):.0f}% of {cores} cores x {wall:.1f} s), "
            f"{1000 * mine / max(1, requests_):.2f} ms/request; per process: {parts}")


def drain_outbox(stack: Stack, seconds: float = 60) -> float:
    """Wait until the outbox worker has sent every queued write; the seconds it took (hello runs on quiet cores)."""
    from sqlalchemy import text

    t0 = time.monotonic()
    with stack.engine.connect() as conn:
        while time.monotonic() - t0 < seconds:
            pending = conn.execute(text("SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')"))
            conn.commit()
            if not pending.scalar():
                break
            time.sleep(0.1)
    return time.monotonic() - t0


def run_clients(targets: list[Any], args: list[tuple[Any, ...]]) -> float:
    """Run one thread per client, all released at the same instant; wall seconds from that instant.

    Without the common start, threads started one after another overlap only partly: a hello-world client
    finishes its requests before the last ones have started, so "N = 100" measured far fewer at once.
    """
    begun: list[float] = []
    start = threading.Barrier(len(targets), action=lambda: begun.append(time.perf_counter()))
    threads = [threading.Thread(target=target, args=(*a, start)) for target, a in zip(targets, args, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - begun[0]


def run_level(stack: Stack, n: int) -> dict[str, Any]:
    record: list[tuple[str, float, int]] = []
    assets: list[tuple[str, float, int]] = []
    clinicians = [Clinician(stack.app_url, stack.sandbox_url, stack.iss, PATIENTS[i % len(PATIENTS)], record, assets)
                  for i in range(n)]
    meter = CpuSplit(stack)
    wall = run_clients([c.journey for c in clinicians], [()] * n)
    split = meter.since()
    drained = drain_outbox(stack)
    hello: list[tuple[str, float, int]] = []
    meter = CpuSplit(stack)
    hwall = run_clients([hello_journey] * n,
                        [(f"http://127.0.0.1:{stack.hello_port}", hello, wall)] * n)
    hsplit = meter.since()
    all_ms = [s * 1000 for _, s, _ in record]
    hello_ms = [s * 1000 for _, s, _ in hello]
    return {"n": n, "record": record, "assets": assets, "wall": wall, "cpu": split["app"], "split": split,
            "drained": drained,
            "launched": sum(1 for c in clinicians if c.lid), "load": targets.load(),
            "hello": hello, "hwall": hwall, "hcpu": hsplit["hello-world"], "hsplit": hsplit,
            "p95_ratio": pct(all_ms, 95) / max(1e-9, pct(hello_ms, 95)),
            "tp_ratio": (len(record) / wall) / max(1e-9, len(hello) / hwall)}


class Profiled(Clinician):
    """A clinician alone on the stack, charging each request the CPU the app's workers, their PostgreSQL backends
    and the sandbox EHR spent while it was open (schedstat, to the nanosecond)."""

    def __init__(self, stack: Stack, visit: tuple[str, str], costs: dict[str, list[tuple[float, ...]]]):
        super().__init__(stack.app_url, stack.sandbox_url, stack.iss, visit, [])
        self.costs = costs
        self.pids = (process_tree(stack.app.pid), backends(stack, "app"), process_tree(stack.sandbox.pid))

    def _timed(self, page: str, method: str, path: str, data: dict[str, Any] | None = None,
               extra: dict[str, str] | None = None) -> Answer:
        before = [exact_cpu(p) for p in self.pids] + [time.thread_time()]
        try:
            return super()._timed(page, method, path, data, extra)
        finally:
            spent = time.thread_time()  # before reading /proc, which is the bench's cost, not the client's
            after = [exact_cpu(p) for p in self.pids] + [spent]
            self.costs[page].append(tuple(1000 * (b - a) for a, b in zip(before, after, strict=True)))


def profile_kinds(stack: Stack, journeys: int) -> None:
    """CPU per request kind, one clinician at a time (after the load runs: every process warm), outbox drained
    between journeys so its sends are not charged to a page."""
    costs: dict[str, list[tuple[float, ...]]] = defaultdict(list)
    for i in range(journeys):
        Profiled(stack, PATIENTS[i % len(PATIENTS)], costs).journey()
        drain_outbox(stack)
    print(f"CPU per request kind, one clinician at a time ({journeys} journeys, mean ms; {targets.load()}):")
    print(f"  {'page':<16}{'app':>8}{'its PG':>8}{'EHR':>8}{'client':>8}")
    sums = [0.0] * 4
    for page, rows in costs.items():
        means = [statistics.fmean(col) for col in zip(*rows, strict=True)]
        sums = [s + m * len(rows) / journeys for s, m in zip(sums, means, strict=True)]
        print(f"  {page:<16}" + "".join(f"{m:>8.2f}" for m in means))
    print(f"  {'per journey':<16}" + "".join(f"{m:>8.1f}" for m in sums) +
          "   (EHR: the sandbox EHR answering the app's calls; client: this load generator's request)")


def _spread(values: list[float], fmt: str) -> str:
    """``median (min-max)`` of the runs' values."""
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def cpu_bound_ratio(r: dict[str, Any]) -> tuple[float, float, float]:
    """(ratio, hello-world ms, journey ms): CPU per request of everything each run's stack used, other processes on
    the shared machine left out. Both runs are CPU-bound, so on cores of their own the throughput ratio tends to
    hello-world's cost over the journey's; unlike the measured ratio it does not move with the machine's load."""
    hello_ms = 1000 * (r["hsplit"]["hello-world"] + r["hsplit"]["load generator"]) / max(1, len(r["hello"]))
    stack = sum(v for k, v in r["split"].items() if k not in ("other processes", "hello-world"))
    journey_ms = 1000 * stack / max(1, len(r["record"]))
    return hello_ms / max(1e-9, journey_ms), hello_ms, journey_ms


def report(r: dict[str, Any], reps: list[dict[str, Any]] | None = None) -> None:
    """The run's table; with ``reps`` (every run at this N, ``r`` the median one) the ratios of each, their median
    and spread, judged against the targets at N = 100."""
    n, record, hello = r["n"], r["record"], r["hello"]
    by_page: dict[str, list[float]] = defaultdict(list)
    errors = sum(1 for _, _, status in record if status >= 400)
    for page, sec, _ in record:
        by_page[page].append(sec * 1000)
    all_ms = [s * 1000 for _, s, _ in record]
    hello_ms = [s * 1000 for _, s, _ in hello]
    rps, hrps = len(record) / r["wall"], len(hello) / r["hwall"]
    print(f"N = {n} clinicians from the EHR launch ({r['launched']} of {n} launched): {len(record)} requests in "
          f"{r['wall']:.1f} s ({rps:.0f} req/s), errors {errors}, app CPU "
          f"{1000 * r['cpu'] / max(1, len(record)):.1f} ms/request; {r['load']}")
    split = {k: v for k, v in r["split"].items() if k != "hello-world"}
    fetched = [status for page, _, status in r["assets"] if page.startswith(ASSET)]
    print(f"  a browser's requests per journey: {len(record) / max(1, r['launched']):.1f} pages (timed), "
          f"{len(fetched) / max(1, r['launched']):.1f} stylesheets and scripts fetched "
          f"({sum(1 for x in fetched if x == 304)} of {len(fetched)} answered 304), "
          f"{(len(r['assets']) - len(fetched)) / max(1, r['launched']):.1f} from the browser's cache "
          "(app CPU per page below includes them)")
    print(f"  CPU, clinicians' run: {describe_split(split, r['wall'], len(record), CpuSplit.APP)}; "
          f"outbox drained {r['drained']:.1f} s after")
    hsplit = {k: v for k, v in r["hsplit"].items() if k in ("hello-world", "load generator", "other processes")}
    print(f"  CPU, hello-world's run: {describe_split(hsplit, r['hwall'], len(hello), ('hello-world',))}")
    failed: dict[str, set[int]] = defaultdict(set)
    for page, _, status in record:
        if status >= 400:
            failed[page].add(status)
    print(f"  {'page':<16}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}  errors")
    for page, values in by_page.items():
        print(f"  {page:<16}{pct(values, 50):>9.1f}{pct(values, 95):>9.1f}{pct(values, 99):>9.1f}  "
              f"{sorted(failed.get(page, ())) or ''}")
    print(f"  {'all pages':<16}{pct(all_ms, 50):>9.1f}{pct(all_ms, 95):>9.1f}{pct(all_ms, 99):>9.1f}")
    hello_errors = sum(1 for _, _, status in hello if status >= 400)
    print(f"  {'hello-world':<16}{pct(hello_ms, 50):>9.1f}{pct(hello_ms, 95):>9.1f}{pct(hello_ms, 99):>9.1f}"
          f"   {hrps:.0f} req/s, CPU {1000 * r['hcpu'] / max(1, len(hello)):.2f} ms/request, errors {hello_errors}")
    reps = reps or [r]
    p95s, tps = [x["p95_ratio"] for x in reps], [x["tp_ratio"] for x in reps]
    req_s = [len(x["record"]) / x["wall"] for x in reps]
    p95_ms = [pct([s * 1000 for _, s, _ in x["record"]], 95) for x in reps]
    print(f"  {len(reps)} run(s) at N = {n}, median (spread): {_spread(req_s, '.0f')} req/s, p95 "
          f"{_spread(p95_ms, '.0f')} ms; against hello: p95 {_spread(p95s, '.1f')}x, throughput {_spread(tps, '.2f')}x")
    bounds = [cpu_bound_ratio(x) for x in reps]
    print(f"  on the stack's own CPU (other processes left out): hello-world {_spread([b[1] for b in bounds], '.2f')} "
          f"ms per request (server + client), the journey {_spread([b[2] for b in bounds], '.2f')} ms (app, its "
          f"PostgreSQL, the harness): throughput bound on cores of their own {_spread([b[0] for b in bounds], '.2f')}x "
          "hello")
    p95_ratio, tp_ratio = statistics.median(p95s), statistics.median(tps)
    if n == 100:
        print(f"  targets at N = 100: p95 {targets.judged('load_p95_ratio', p95_ratio, 'x', fmt='.1f')} hello, "
              f"throughput {targets.judged('load_throughput_ratio', tp_ratio, 'x')} hello")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="10,50,100", help="comma-separated concurrency levels")
    parser.add_argument("--profile", type=int, default=10,
                        help="journeys of one clinician alone, for the CPU per request kind (default 10; 0: none)")
    parser.add_argument("--reps", type=int, default=3,
                        help="runs at each N, alternating with hello-world's; the median ratios are judged (default 3)")
    args = parser.parse_args(argv)
    try:
        from sqlalchemy import create_engine, text

        with create_engine(PG).connect() as conn:
            conn.execute(text("select 1"))
    except Exception as exc:  # the bench prints why it did not run; it never fails the others
        print(f"load bench skipped: PostgreSQL at TEST_DATABASE_URL not reachable ({exc.__class__.__name__})")
        return
    conf = runpy.run_path(GUNICORN[1])
    print(f"gunicorn -c config/gunicorn.conf.py ({conf['workers']} gthread workers x {conf['threads']} threads, "
          "preload, gc.freeze) for both apps; PostgreSQL; sandbox EHR and one outbox worker as separate processes; "
          f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as d, Stack(Path(d)) as stack:
        for n in (int(x) for x in args.clients.split(",")):
            runs = [run_level(stack, n) for _ in range(args.reps)]
            median_run = sorted(runs, key=lambda x: x["p95_ratio"])[len(runs) // 2]
            report(median_run, runs)
        if args.profile:
            profile_kinds(stack, args.profile)


if __name__ == "__main__":
    main()
