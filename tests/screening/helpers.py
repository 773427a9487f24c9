"""Start a launch on any app instance (the shared make_launch fixture is bound to the default app)."""

from __future__ import annotations

import secrets
from typing import Any

from smart_app.launch_state import Launch, new_expiry
from smart_app.models import LaunchRecord
from tests.conftest import default_context


def launch_for(app, client, context: dict[str, Any] | None = None, data: dict[str, Any] | None = None,
               bid: str | None = None) -> str:
    if client is not None:
        with client.session_transaction() as sess:
            bid = sess.setdefault("bid", secrets.token_urlsafe(24))
    with app.test_request_context():
        from smart_app.db import get_session

        record = LaunchRecord(state=secrets.token_urlsafe(24), browser_id=bid, iss="http://ehr.test/fhir",
                              kind="ehr", status="active", expires_at=new_expiry())
        launch = Launch(record)
        launch.set_context(context or default_context())
        launch.set_tokens({"access_token": "test-token", "token_type": "Bearer"})
        if data:
            launch.update_data(**data)
        db = get_session()
        db.add(record)
        db.commit()
        return record.id


def launch_data(app, lid: str) -> dict[str, Any]:
    with app.test_request_context():
        from smart_app.db import get_session

        return Launch(get_session().get(LaunchRecord, lid)).data
