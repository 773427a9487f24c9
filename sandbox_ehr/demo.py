"""Run the demo: the sandbox EHR and the app in one process, wired to each other.

    python -m sandbox_ehr.demo --app-port 5000 --sandbox-port 8081 [--personality generic|epic|oracle]
                               [--per-launch-iss]

Then open the printed EHR URL, pick a clinician, patient and encounter, and launch. Data lives
under ``instance/`` (SQLite); generated development secrets in ``instance/dev-secrets.json``.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from werkzeug.serving import BaseWSGIServer, make_server

from sandbox_ehr.personality import DEFAULT, NAMES


def build_apps(host: str, app_port: int, sandbox_port: int, instance: Path,
               personality: str = "generic", per_launch_iss: bool = False) -> tuple[Any, Any]:
    """The sandbox EHR and the app, configured for each other (nothing read from other deployments)."""
    from sandbox_ehr.app import create_sandbox_app
    from smart_app import create_app

    instance.mkdir(parents=True, exist_ok=True)
    sandbox_url = f"http://{host}:{sandbox_port}"
    app_url = f"http://{host}:{app_port}"
    iss = sandbox_url + "/fhir"
    sandbox = create_sandbox_app({"SANDBOX_DB": str(instance / "sandbox.db"),
                                  "APP_LAUNCH_URL": app_url + "/launch",
                                  "SANDBOX_BASE_URL": sandbox_url,
                                  "CDS_SERVICES_URL": app_url + "/cds-services",
                                  "SANDBOX_PERSONALITY": personality,
                                  # Each standalone launch on an iss of its own; the sandbox deployment's ehrs
                                  # pattern ties them to the sandbox EHR (on_sandbox moves it to this port).
                                  "SANDBOX_PER_LAUNCH_ISS": per_launch_iss})
    app = create_app({
        # Says explicitly that this is the demo: the sandbox deployment, its public keys, SQLite and plain
        # HTTP are allowed here and nowhere else (smart_app/ops/config_check.py refuses them in production).
        "IPV_MODE": "demo",
        **deployment_for(personality, iss),
        "APP_BASE_URL": app_url,
        "DATABASE_URL": f"sqlite:///{instance / 'app.db'}",
        # The demo migrates its own SQLite file at start (production runs `flask --app smart_app db upgrade`).
        "DB_AUTO_UPGRADE": True,
        # Plain HTTP on the loopback: a Secure cookie would never come back.
        "SESSION_COOKIE_SECURE": False,
        "EMBEDDED_IN_IFRAME": False,
        # The simulator can embed the app in an iframe ("Launch inside an EHR frame").
        "FRAME_ANCESTORS": f"'self' {sandbox_url}",
        # The simulator calls the app's CDS Hooks service, signing with its key (sandbox_ehr/cds_client.py).
        "CDS": sandbox_cds_config(sandbox_url),
    })
    return sandbox, app


def sandbox_cds_config(sandbox_url: str) -> dict[str, Any]:
    """The sandbox deployment's ``cds`` block with the sandbox on its actual port as the one CDS client."""
    cds = dict(_deployment_file("sandbox").get("cds") or {})
    cds["clients"] = [{"iss": sandbox_url, "jwks_url": sandbox_url + "/cds-client/jwks.json",
                       "fhir_servers": [sandbox_url + "/fhir"], "site": "unspecified"}]
    return cds


# The app's deployment file whose scopes and EHR profile match each personality (the vendor's own client settings
# are replaced by the sandbox's registered client).
VENDOR_DEPLOYMENTS = {"generic": "sandbox", "epic": "epic", "oracle": "oracle-health"}


def _deployment_file(name: str) -> dict[str, Any]:
    import yaml

    from config.deployment import DEPLOYMENTS_DIR

    return yaml.safe_load((DEPLOYMENTS_DIR / f"{name}.yaml").read_text(encoding="utf-8")) or {}


def deployment_for(personality: str, iss: str) -> dict[str, Any]:
    """create_app settings over the sandbox deployment (its client and key): this ``iss``, and the scopes and EHR
    profile of the vendor the sandbox plays, the profile's write scopes added to the launch scopes, the vendor
    file's social-work blocks, and the restricted note type the personality's organisation files (where labels
    are not kept the app refuses to start without one)."""
    from config.deployment import Deployment
    from config.ehr_profile import EhrProfile
    from sandbox_ehr.personality import load

    sandbox = Deployment.model_validate(_deployment_file("sandbox"))
    settings: dict[str, Any] = {"IPV_DEPLOYMENT": "sandbox", **on_sandbox(sandbox, iss.removesuffix("/fhir"))}
    name = VENDOR_DEPLOYMENTS.get(personality, "sandbox")
    if name == "sandbox":
        return settings
    vendor = _deployment_file(name)
    profile = EhrProfile.load(vendor["ehr_profile"])
    scopes = vendor["scopes_ehr"].split()
    scopes += [s for s in profile.scopes if s not in scopes]
    settings.update(SCOPES_EHR=" ".join(scopes), SCOPES_STANDALONE=vendor["scopes_standalone"],
                    EHR_PROFILE=vendor["ehr_profile"])
    settings.update({key.upper(): vendor[key] for key in ("roles", "worklist", "backend_services") if key in vendor})
    if "backend_services" not in vendor and _deployment_file("sandbox").get("backend_services"):
        # The sandbox registers the app as a Backend Service too; ask in the vendor's spelling (Oracle: v1 only).
        system = [f"system/{s.split('/', 1)[1]}" for s in profile.scopes if "/" in s]
        settings["BACKEND_SERVICES"] = {"scope": " ".join(dict.fromkeys(system))}
    restricted = load(personality).data.get("restricted_note_type")
    if restricted and "restricted_note_type" not in vendor:
        settings["RESTRICTED_NOTE_TYPE"] = restricted
    return settings


def on_sandbox(deployment: Any, sandbox_url: str) -> dict[str, Any]:
    """Settings that put the sandbox EHR where it actually runs: allowed and standalone iss, and the deployment's
    ``ehrs`` entry (the plain iss and the per-launch iss pattern) moved from the file's port to ``sandbox_url``'s."""
    from config.ehrs import with_origin

    iss = sandbox_url + "/fhir"
    listed = urlsplit(deployment.standalone_iss or iss)
    moved: dict[str, Any] = {"ALLOWED_ISS": [iss], "STANDALONE_ISS": iss}
    block = {k: v.model_dump() for k, v in deployment.ehrs.items()}
    if block:
        moved["EHRS"] = with_origin(block, f"{listed.scheme}://{listed.netloc}", sandbox_url)
    return moved


def _serve(server: BaseWSGIServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox_ehr.demo",
                                     description="Sandbox EHR + IPV screening app, wired together")
    parser.add_argument("--host", default="127.0.0.1", help="interface for both servers (default 127.0.0.1)")
    parser.add_argument("--app-port", type=int, default=5000)
    parser.add_argument("--sandbox-port", type=int, default=8081)
    parser.add_argument("--instance", default="instance", help="folder for the SQLite files (default instance/)")
    parser.add_argument("--personality", choices=NAMES, default=DEFAULT,
                        help="vendor rules the sandbox EHR follows: generic, epic or oracle (default generic)")
    parser.add_argument("--per-launch-iss", action="store_true",
                        help="give each standalone launch an iss of its own (<sandbox>/l/<id>/fhir), as independent "
                             "SMART launchers do")
    args = parser.parse_args(argv)

    sandbox, app = build_apps(args.host, args.app_port, args.sandbox_port, Path(args.instance).resolve(),
                              args.personality, args.per_launch_iss)
    try:
        # threaded: during a launch the app calls the sandbox while the browser waits on the app.
        servers = [make_server(args.host, args.sandbox_port, sandbox, threaded=True),
                   make_server(args.host, args.app_port, app, threaded=True)]
    except OSError as exc:
        print(f"Cannot start the demo: {exc}. Choose other ports: "
              f"make demo APP_PORT=5001 SANDBOX_PORT=8082", file=sys.stderr)
        return 1
    for server in servers:
        _serve(server)
    stop = threading.Event()
    # The outbox worker that production runs as its own process (`flask outbox-worker`): here a thread,
    # so writes the EHR could not take at once are retried without a second command.
    from smart_app.outbox.worker import OutboxWorker

    threading.Thread(target=OutboxWorker(app).loop, kwargs={"stop": stop.is_set}, daemon=True).start()
    sandbox_url = f"http://{args.host}:{args.sandbox_port}"
    app_url = f"http://{args.host}:{args.app_port}"
    print(f"""
Sandbox EHR   {sandbox_url}/ehr   (FHIR base / iss: {sandbox_url}/fhir; personality {args.personality})
App           {app_url}/launch    (standalone launch for social work: {app_url}/launch/standalone)

Open {sandbox_url}/ehr in a browser, pick a clinician, patient and encounter, and press "Launch app".
The chart-write outbox worker runs in this process too.
Press Ctrl+C to stop.
""", flush=True)

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    for server in servers:
        server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
