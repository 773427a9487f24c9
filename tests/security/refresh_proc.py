"""One process that renews a launch's expired token, for the cross-process refresh test.

    python -m tests.security.refresh_proc SPEC.json

SPEC.json: {"personality", "iss", "config", "launch", "patient", "go"}. The app is built the way
``sandbox_ehr.harness.vendor.start`` builds it (same database, keys and EHR profile). Prints "ready", waits until
the file ``go`` exists (so two processes ask at once), gets a FHIR client for the launch (refreshing its token)
and reads the patient with it; prints {"token": ..., "read": true|false} or {"error": ...}.
"""

from __future__ import annotations

import json
import os
import sys
import time

GO_WAIT_SECONDS = 60


def main(path: str) -> None:
    from sandbox_ehr.demo import deployment_for
    from smart_app import create_app
    from smart_app.launch.ehr import fhir_client_for
    from smart_app.launch.state import Launch
    from smart_app.store.db import get_session
    from smart_app.store.models import LaunchRecord

    with open(path, encoding="utf-8") as fh:
        spec = json.load(fh)
    app = create_app({**deployment_for(spec["personality"], spec["iss"]), **spec["config"]})
    print("ready", flush=True)
    until = time.monotonic() + GO_WAIT_SECONDS
    while not os.path.exists(spec["go"]) and time.monotonic() < until:
        time.sleep(0.005)
    with app.test_request_context():
        try:
            client = fhir_client_for(Launch(get_session().get(LaunchRecord, spec["launch"])))
            read = client.read("Patient", spec["patient"]).get("id") == spec["patient"]
            print(json.dumps({"token": client.headers["Authorization"], "read": read}), flush=True)
        except Exception as exc:  # noqa: BLE001 - the test reads what went wrong
            print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
