"""Run the sandbox EHR: ``python -m sandbox_ehr --port 8081 --app-launch-url http://127.0.0.1:5000/launch
[--personality generic|epic|oracle]``."""

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
    args = parser.parse_args(argv)
    app = create_sandbox_app({"SANDBOX_DB": args.db, "APP_LAUNCH_URL": args.app_launch_url,
                              "SANDBOX_BASE_URL": args.base_url, "SANDBOX_FAULTS": args.faults,
                              "SANDBOX_PERSONALITY": args.personality})
    print(f"Sandbox EHR ({app.extensions['sandbox_personality'].title}): http://{args.host}:{args.port}/ehr  "
          f"(iss http://{args.host}:{args.port}/fhir)")
    # threaded: the app calls back (token, FHIR) while a browser request to the sandbox may be open.
    run_simple(args.host, args.port, app, threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
