"""Two hosts as a deployment runs them (DEPLOY.md, section 1), on loopback ports: two app instances (gunicorn with
config/gunicorn.conf.py, 2 workers each, separate processes on separate ports), two outbox workers (`flask
outbox-worker`), the sandbox EHR as its own process (`python -m sandbox_ehr`), one PostgreSQL database of the
stack's own and Redis for the rate limits. The instances share nothing but the database, Redis and what every host
of a deployment shares: the deployment file, SECRET_KEY and TOKEN_ENCRYPTION_KEY.

Both instances are configured with the same public APP_BASE_URL (instance A's address: the EHR sends the browser
back there), as two hosts behind one load balancer are; a test picks the instance of each request, as a balancer
without sticky sessions may. ``behind_pgbouncer`` starts PgBouncer in transaction mode (deploy/pgbouncer.ini with
this stack's ports and paths) for a further instance and worker to connect through.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import yaml
from cryptography.fernet import Fernet
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from benchmarks.bench_load import free_port, wait_http
from config.ehrs import with_origin
from tests.support import tools

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
# The Redis database the stacks' rate limits live in: not 0, which other tests count in. Never emptied: under
# pytest-xdist two stacks may run at once; a test that counts to a limit comes from an address of its own.
REDIS_DB = 9


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen | None = None

    def start(self) -> Proc:
        self.popen = subprocess.Popen(self.argv, env=self.env, cwd=ROOT, stdout=self.log.open("a"),
                                      stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, sig: int = signal.SIGTERM, wait: float = 15) -> None:
        if not self.alive():
            return
        assert self.popen is not None
        try:
            os.killpg(self.popen.pid, sig)  # gunicorn's master and its workers
            self.popen.wait(timeout=wait)
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=5)


@dataclass
class TwoHosts:
    folder: Path
    tuning: dict[str, Any] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    _cleanup: list[Path] = field(default_factory=list)

    # -- set-up ------------------------------------------------------------------------------------------------

    def start(self) -> TwoHosts:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.redis_url = tools.redis_url(REDIS_DB)
        base = tools.postgres_base_url()
        self.db_name = f"ipv_hosts_{uuid.uuid4().hex[:10]}"
        self._admin = create_engine(base, isolation_level="AUTOCOMMIT")
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.db_name}"'))
        self.direct_url = make_url(base).set(database=self.db_name).render_as_string(hide_password=False)
        self.engine: Engine = create_engine(self.direct_url)  # the test's own reads, never through PgBouncer
        self.ports = {name: free_port() for name in ("sandbox", "a", "b")}
        self.sandbox_url = f"http://127.0.0.1:{self.ports['sandbox']}"
        self.iss = self.sandbox_url + "/fhir"
        self.urls = {name: f"http://127.0.0.1:{self.ports[name]}" for name in ("a", "b")}
        self.sandbox_db = self.folder / "sandbox.db"
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "PYTHONHASHSEED")}
        # Every host of a deployment has the same file, secrets and database; nothing else is shared.
        self.env = {**keep, "PYTHONPATH": str(ROOT), "IPV_MODE": "test", "HOME": str(self.folder),
                    "IPV_DEPLOYMENT": str(self._deployment()), "DATABASE_URL": self.direct_url,
                    "SECRET_KEY": secrets.token_urlsafe(48), "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
                    "APP_BASE_URL": self.urls["a"], "RATELIMIT_STORAGE_URI": self.redis_url,
                    # As behind the load balancer: the client's address from one X-Forwarded-For hop.
                    "TRUSTED_PROXY_HOPS": "1"}
        self._spawn("sandbox", [str(BIN / "python"), "-m", "sandbox_ehr", "--port", str(self.ports["sandbox"]),
                                "--db", str(self.sandbox_db), "--app-launch-url", self.urls["a"] + "/launch"])
        wait_http(self.sandbox_url + "/fhir/metadata")
        flask = [str(BIN / "flask"), "--app", "smart_app"]
        # DEPLOY.md: the migrations before any instance starts (check-config would refuse the sandbox's public keys
        # and plain HTTP for a production start: the `tls` tests run it on a production configuration).
        done = subprocess.run([*flask, "db", "upgrade"], env=self.env, cwd=ROOT, capture_output=True, text=True,
                              timeout=180)
        assert done.returncode == 0, f"db upgrade: {done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        for name in ("a", "b"):
            self.start_instance(name)
        for name in ("worker-1", "worker-2"):
            self.start_worker(name)
        for name in ("a", "b"):
            self._wait(self.urls[name] + "/healthz", f"app-{name}")

    def start_instance(self, name: str, **env: str) -> str:
        """An app instance (gunicorn, 2 workers) on its own port with ``env`` over the stack's; its URL."""
        if name not in self.ports:
            self.ports[name] = free_port()
            self.urls[name] = f"http://127.0.0.1:{self.ports[name]}"
        home = self.folder / f"host-{name}"  # gunicorn keeps its control socket under HOME: one per host
        home.mkdir(exist_ok=True)
        self._spawn(f"app-{name}", [str(BIN / "gunicorn"), "-c", str(ROOT / "config" / "gunicorn.conf.py"),
                                    "smart_app:create_app()"],
                    GUNICORN_BIND=f"127.0.0.1:{self.ports[name]}", GUNICORN_WORKERS="2", HOME=str(home),
                    **{**self._named(f"app-{name}"), **env})
        return self.urls[name]

    def _named(self, name: str) -> dict[str, str]:
        """The stack's database URL with the process's name as its connections' application_name, so that
        pg_stat_activity counts each process's connections (``connections``)."""
        url = make_url(self.env["DATABASE_URL"]).update_query_dict({"application_name": name})
        return {"DATABASE_URL": url.render_as_string(hide_password=False)}

    def connections(self) -> dict[str, int]:
        """Open connections to the stack's database, by the process (application_name) that holds them."""
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT application_name, count(*) FROM pg_stat_activity "
                                     "WHERE datname = current_database() AND pid <> pg_backend_pid() GROUP BY 1"))
            return {name: count for name, count in rows}

    def behind_pgbouncer(self) -> dict[str, str]:
        """PgBouncer (transaction mode, deploy/pgbouncer.ini) in front of the stack's database: the environment a
        process connecting through it gets (its URL, and the deployment file with prepared statements off)."""
        url = self._start_pgbouncer()
        data = yaml.safe_load(Path(self.env["IPV_DEPLOYMENT"]).read_text())
        data["tuning"]["db_prepared_statements"] = False
        path = self.folder / "deployment-pgbouncer" / "sandbox.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(data))
        return {"DATABASE_URL": url, "IPV_DEPLOYMENT": str(path)}

    def wait_serving(self, name: str) -> None:
        self._wait(self.urls[name] + "/healthz", f"app-{name}")

    def _deployment(self) -> Path:
        """The sandbox deployment moved to this stack's sandbox port, plain-HTTP cookies, quiet logs, and
        ``tuning`` on top."""
        data = yaml.safe_load((ROOT / "config" / "deployments" / "sandbox.yaml").read_text())
        listed = urlsplit(data["standalone_iss"])
        data.update(allowed_iss=[self.iss], standalone_iss=self.iss,
                    private_key_file=str(ROOT / "sandbox_ehr" / "keys" / "rs384-private.pem"),
                    ehrs=with_origin(data.get("ehrs") or {}, f"{listed.scheme}://{listed.netloc}", self.sandbox_url))
        for client in (data.get("cds") or {}).get("clients") or []:
            client["iss"], client["jwks_url"] = self.sandbox_url, self.sandbox_url + "/cds-client/jwks.json"
            client["fhir_servers"] = [self.iss]
        data["tuning"] = {**data.get("tuning", {}), "session_cookie_secure": False, "log_level": "WARNING",
                          "trusted_hosts": ["127.0.0.1"], **self.tuning}
        path = self.folder / "deployment" / "sandbox.yaml"
        path.parent.mkdir(exist_ok=True)
        path.write_text(yaml.safe_dump(data))
        return path

    def _start_pgbouncer(self) -> str:
        """PgBouncer in transaction mode from the shipped example, on a free port; the app's URL through it."""
        tools.pgbouncer(PGBOUNCER)
        port = free_port()
        pg = make_url(self.direct_url)
        # Its own folder: as root PgBouncer runs as postgres, who cannot enter pytest's 0700 folders.
        folder = Path(tempfile.mkdtemp(prefix="ipv-pgbouncer-"))
        self._cleanup.append(folder)
        ini = (ROOT / "deploy" / "pgbouncer.ini").read_text()
        changes = [("ipv = host=127.0.0.1 port=5432 dbname=ipv",
                    f"{self.db_name} = host={pg.host or '127.0.0.1'} port={pg.port or 5432} dbname={self.db_name}"
                    f" user={pg.username or 'postgres'}"),
                   ("listen_port = 6432", f"listen_port = {port}"),
                   # The test server trusts loopback: PgBouncer logs in as the user named above.
                   ("auth_type = scram-sha-256", "auth_type = any"),
                   ("auth_file = /etc/pgbouncer/userlist.txt", f"auth_file = {folder / 'userlist.txt'}"),
                   ("logfile = /var/log/postgresql/pgbouncer.log", f"logfile = {folder / 'pgbouncer.log'}"),
                   ("pidfile = /run/postgresql/pgbouncer.pid", f"pidfile = {folder / 'pgbouncer.pid'}"),
                   ("unix_socket_dir = /run/postgresql", "unix_socket_dir ="),
                   ("pool_mode = transaction", "pool_mode = transaction\nstats_users = postgres")]
        for old, new in changes:
            assert old in ini, f"deploy/pgbouncer.ini no longer has {old!r}: update this test"
            ini = ini.replace(old, new)
        (folder / "userlist.txt").write_text("")
        conf = folder / "pgbouncer.ini"
        conf.write_text(ini)
        argv = [PGBOUNCER, str(conf)]
        if os.geteuid() == 0:
            argv.insert(1, "--user=postgres")  # PgBouncer refuses to run as root
            uid, gid = _ids("postgres")
            for path in (folder, conf, folder / "userlist.txt"):
                os.chown(path, uid, gid)
        self._spawn("pgbouncer", argv)
        self.pgbouncer_port = port
        url = make_url(self.direct_url).set(host="127.0.0.1", port=port)
        deadline = time.monotonic() + 30
        while True:
            probe = create_engine(url, poolclass=NullPool, connect_args={"prepare_threshold": None})
            try:
                with probe.connect() as conn:
                    conn.execute(text("SELECT 1"))
                break
            except Exception:  # noqa: BLE001 - not listening yet
                assert self.procs["pgbouncer"].alive() and time.monotonic() < deadline, self.log_tail()
                time.sleep(0.1)
            finally:
                probe.dispose()
        return url.render_as_string(hide_password=False)

    def _spawn(self, name: str, argv: list[str], **extra: str) -> Proc:
        env = getattr(self, "env", dict(os.environ))
        proc = Proc(name, argv, {**env, **extra}, self.folder / f"{name}.log").start()
        self.procs[name] = proc
        return proc

    def start_worker(self, name: str, **env: str) -> Proc:
        return self._spawn(name, [str(BIN / "flask"), "--app", "smart_app", "outbox-worker", "--idle-sleep", "0.2"],
                           **{**self._named(name), **env})

    def _wait(self, url: str, name: str, seconds: float = 90) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert all(p.alive() for p in self.procs.values()), self.log_tail()
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"{name} did not answer {url}:\n{self.log_tail()}")

    # -- use ---------------------------------------------------------------------------------------------------

    def scalar(self, sql: str, **params: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()

    def ehr_resources(self, kind: str) -> list[str]:
        """The JSON of every resource of ``kind`` the sandbox EHR keeps, read from its own store."""
        with sqlite3.connect(self.sandbox_db) as conn:
            return [row[0] for row in conn.execute("SELECT content FROM fhir_resource WHERE type = ?", (kind,))]

    def faults(self, **settings: Any) -> dict[str, Any]:
        """Configure the sandbox EHR's fault injection (``{}`` clears it); its counts so far."""
        if settings:
            requests.post(self.sandbox_url + "/__faults", json=settings, timeout=10).raise_for_status()
        return requests.get(self.sandbox_url + "/__faults", timeout=10).json()

    def pgbouncer_totals(self) -> dict[str, int]:
        """PgBouncer's own count of the transactions and queries it carried to the stack's database (SHOW STATS on
        its admin console)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.pgbouncer_port, dbname="pgbouncer", user="postgres",
                             autocommit=True, prepare_threshold=None) as conn:
            cur = conn.execute("SHOW STATS")
            names = [c.name for c in cur.description]
            for row in cur.fetchall():
                stats = dict(zip(names, row, strict=True))
                if stats["database"] == self.db_name:
                    return {"xact": int(stats["total_xact_count"]), "query": int(stats["total_query_count"])}
        return {"xact": 0, "query": 0}

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p.name}\n{p.log.read_text(errors='replace')[-chars:]}"
                         for p in self.procs.values() if p.log.exists())

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.name != "pgbouncer":
                proc.stop()
        if "pgbouncer" in self.procs:
            self.procs["pgbouncer"].stop()
        for folder in self._cleanup:
            shutil.rmtree(folder, ignore_errors=True)
        if hasattr(self, "engine"):
            self.engine.dispose()
        if hasattr(self, "_admin"):
            with self._admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)'))
            self._admin.dispose()


def _ids(user: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid
