"""The queue's migrations fill what they add for referrals already stored: the chart note's reference code
(0010, computed from the id) and the program keys (0013, copied from the program index: nothing decrypted).
At 0013 a referral stored before either still has ``mrn_key`` NULL; 0014 fills it, with the route, through the app
(tests/worklist/test_upgrade_backfill.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text

from fhir.builders import reference_code
from smart_app.store import migrate

pytestmark = [pytest.mark.routing, pytest.mark.worklist]


def _upgrade_with_referrals(url: str) -> dict[str, dict]:
    engine = create_engine(url)
    try:
        migrate.upgrade(engine, "0009_referral_program")
        now = datetime.now(UTC)
        with engine.begin() as conn:
            for rid in ("R-two", "R-none", "R-old"):
                conn.execute(text("INSERT INTO referral (id, iss, profile, urgent, status, created_at) VALUES "
                                  "(:id, 'https://ehr/fhir', 'generic-smart2', false, 'requested', :now)"),
                             {"id": rid, "now": now})
            for rid, key in (("R-two", "k-b"), ("R-two", "k-a"), ("R-none", "NONE")):  # R-old: before the index
                conn.execute(text("INSERT INTO referral_program (referral_id, key) VALUES (:r, :k)"),
                             {"r": rid, "k": key})
        # Up to 0013: 0014 routes these referrals, which needs the app (tests/worklist/test_upgrade_backfill.py).
        migrate.upgrade(engine, "0013_referral_program_keys")
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, reference_code, mrn_key, program_keys FROM referral")).mappings()
            return {row["id"]: dict(row) for row in rows}
    finally:
        engine.dispose()


def _check(rows: dict[str, dict]) -> None:
    assert {rid: row["reference_code"] for rid, row in rows.items()} == {rid: reference_code(rid) for rid in rows}
    assert {rid: row["program_keys"] for rid, row in rows.items()} == {"R-two": "k-a,k-b", "R-none": "",
                                                                       "R-old": None}
    assert all(row["mrn_key"] is None for row in rows.values())


def test_upgrade_fills_reference_codes_and_program_keys_on_sqlite(tmp_path):
    _check(_upgrade_with_referrals(f"sqlite:///{tmp_path / 'q.db'}"))


@pytest.mark.postgres
def test_upgrade_fills_reference_codes_and_program_keys_on_postgresql(postgres_url):
    _check(_upgrade_with_referrals(postgres_url))
