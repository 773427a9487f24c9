"""Run the sandbox EHR: ``python -m sandbox_ehr --port 8081 --app-launch-url http://127.0.0.1:5000/launch
[--personality generic|epic|oracle] [--per-launch-iss]``."""

from __future__ import annotations

import argparse

from werkzeug.serving import run_simple

from sandbox_ehr.app import create_sandbox_app
from sandbox_ehr.personality import DEFAULT, NAMES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox_ehr", description="Sandbox SMART on FHIR EHR")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--db", default="instance/sandbox.db", help="SQLite file (store, launches, tokens)")
    parser.add_argument("--app-launch-url", default="http://127.0.0.1:5000/launch",
                        help="the app's SMART launch URL the simulator opens")
    parser.add_argument("--base-url", default=None,
                        help="public base URL when behind a proxy (default: taken from each request)")
    parser.add_argument("--faults", action=argparse.BooleanOptionalAction, default=True,
                        help="enable fault injection at /__faults (default: on; it is a test harness)")
    parser.add_argument("--personality", choices=NAMES, default=DEFAULT,
                        help="vendor rules the EHR follows (sandbox_ehr/personalities/*.yaml; default generic)")
    parser.add_argument("--app-standalone-url", default=None,
                        help="the app's standalone launch URL (default: <app-launch-url>/standalone)")
    parser.add_argument("--per-launch-iss", action="store_true",
                        help="serve each standalone launch (POST /ehr/standalone) under an iss of its own, "
                             "<base>/l/<id>/fhir, as some independent SMART launchers do (default: off)")
    args = parser.parse_args(argv)
    app = create_sandbox_app({"SANDBOX_DB": args.db, "APP_LAUNCH_URL": args.app_launch_url,
                              "APP_STANDALONE_URL": args.app_standalone_url,
                              "SANDBOX_BASE_URL": args.base_url, "SANDBOX_FAULTS": args.faults,
                              "SANDBOX_PERSONALITY": args.personality,
                              "SANDBOX_PER_LAUNCH_ISS": args.per_launch_iss})
    print(f"Sandbox EHR ({app.extensions['sandbox_personality'].title}): http://{args.host}:{args.port}/ehr  "
          f"(iss http://{args.host}:{args.port}/fhir)")
    # threaded: the app calls back (token, FHIR) while a browser request to the sandbox may be open.
    run_simple(args.host, args.port, app, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
