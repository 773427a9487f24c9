"""An outbox worker in its own process, for the fault suite to kill (SIGKILL) while it is sending.

    python -m tests.vendor.worker_proc CONFIG.json

CONFIG.json: {"personality", "iss", "config": {create_app settings, the deployment's aside}}. The app is built the
way ``sandbox_ehr.harness.vendor.start`` builds it, so the worker sees the same database, key and EHR profile.
"""

from __future__ import annotations

import json
import sys


def main(path: str) -> None:
    from sandbox_ehr.demo import deployment_for
    from smart_app import create_app
    from smart_app.outbox.worker import OutboxWorker

    with open(path, encoding="utf-8") as fh:
        spec = json.load(fh)
    app = create_app({**deployment_for(spec["personality"], spec["iss"]), **spec["config"]})
    print("ready", flush=True)
    OutboxWorker(app).loop(idle_sleep=0.05)  # until the test kills it


if __name__ == "__main__":
    main(sys.argv[1])
