"""report_month and ix_referral_dims_month: the program report kept per month

report_month keeps each closed month's counts and hours to first contact, so after a late change only the months
it touched are counted again (smart_app/report/memo.py); ix_referral_dims_month reads one month's referrals; a
change to report dimensions notes its referral's month made too (a referral without them counts in that month).

Revision ID: report_month
Revises: queue_cells
Create Date: 2026-12-07 10:05:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "report_month"
down_revision = "queue_cells"
branch_labels = None
depends_on = None


def dims_trigger(s: str) -> list[str]:
    """A frozen copy of smart_app/report/memo.py's ``pg_triggers`` for report dimensions as of this revision:
    their changes note their referral's month made as well as their own month."""
    body = ("INSERT INTO {s}.report_change (xid, month) SELECT DISTINCT pg_current_xact_id()::text::bigint, m "
            "FROM (SELECT month AS m FROM {rows} UNION ALL SELECT to_char(r.created_at AT TIME ZONE 'UTC', "
            "'YYYY-MM') FROM {rows} d JOIN {s}.referral r ON r.id = d.referral_id) x WHERE m IS NOT NULL "
            "ON CONFLICT DO NOTHING")
    out = [f"""CREATE OR REPLACE FUNCTION {s}.report_change_by_dims() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    {body.format(s=s, rows='new_rows')};
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    {body.format(s=s, rows='old_rows')};
  END IF;
  RETURN NULL;
END $$"""]
    for what, refs in (("insert", "NEW TABLE AS new_rows"), ("update", "OLD TABLE AS old_rows NEW TABLE AS new_rows"),
                       ("delete", "OLD TABLE AS old_rows")):
        out += [f"DROP TRIGGER IF EXISTS referral_dims_report_{what} ON {s}.referral_dims",
                f"CREATE TRIGGER referral_dims_report_{what} AFTER {what.upper()} ON {s}.referral_dims "
                f"REFERENCING {refs} FOR EACH STATEMENT EXECUTE FUNCTION {s}.report_change_by_dims()"]
    return out


def upgrade() -> None:
    op.create_table("report_month",
                    sa.Column("key", sa.String(length=64), nullable=False),
                    sa.Column("month", sa.String(length=7), nullable=False),
                    sa.Column("counts", sa.Text(), nullable=False),
                    sa.Column("hours", sa.Text(), nullable=False),
                    sa.PrimaryKeyConstraint("key", "month"))
    op.create_index("ix_referral_dims_month", "referral_dims", ["month"], unique=False)
    if op.get_bind().dialect.name == "postgresql":
        name = op.get_bind().execute(sa.text("SELECT current_schema()")).scalar()
        for sql in dims_trigger('"' + str(name).replace('"', '""') + '"'):
            op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for what, refs in (("insert", "NEW TABLE AS new_rows"), ("update", "OLD TABLE AS old_rows NEW TABLE AS "
                           "new_rows"), ("delete", "OLD TABLE AS old_rows")):
            op.execute(f"DROP TRIGGER IF EXISTS referral_dims_report_{what} ON referral_dims")
            op.execute(f"CREATE TRIGGER referral_dims_report_{what} AFTER {what.upper()} ON referral_dims "
                       f"REFERENCING {refs} FOR EACH STATEMENT EXECUTE FUNCTION report_change_by_month()")
        op.execute("DROP FUNCTION IF EXISTS report_change_by_dims()")
    op.drop_index("ix_referral_dims_month", table_name="referral_dims")
    op.drop_table("report_month")
