"""outbox: a row's referral_id may name a neutral check-in record instead of a referral (no foreign key)

The optional neutral chart line after a negative screen (smart_app/writeback/checkin.py) is a chart write like the
referral note, sent by the same outbox, but no referral exists behind it: its rows carry the launch's check-in key.

Revision ID: outbox_checkin_rows
Revises: outbox_in_flight
Create Date: 2026-12-07 07:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "outbox_checkin_rows"
down_revision = "outbox_in_flight"
branch_labels = None
depends_on = None

# SQLite's foreign keys have no name: batch mode names them by this convention to drop or create one.
NAMING = {"fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s"}
SQLITE_FK = "fk_outbox_referral_id_referral"


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        with op.batch_alter_table("outbox", naming_convention=NAMING, recreate="always") as batch:
            batch.drop_constraint(SQLITE_FK, type_="foreignkey")
        return
    for fk in sa.inspect(conn).get_foreign_keys("outbox"):
        if fk["constrained_columns"] == ["referral_id"] and fk.get("name"):
            op.drop_constraint(fk["name"], "outbox", type_="foreignkey")


def downgrade() -> None:
    # Check-in rows have no referral: they go before the foreign key comes back.
    op.execute("DELETE FROM outbox WHERE referral_id NOT IN (SELECT id FROM referral)")
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("outbox", naming_convention=NAMING, recreate="always") as batch:
            batch.create_foreign_key(SQLITE_FK, "referral", ["referral_id"], ["id"])
        return
    op.create_foreign_key("outbox_referral_id_fkey", "outbox", "referral", ["referral_id"], ["id"])
