"""report_change and report_memo: the program report kept while the months it shows do not change

report_memo keeps a report as counted and suppressed, with the snapshot its counts were read in. On PostgreSQL,
statement triggers on referral, referral_dims and report_event note in report_change each transaction that changes
them and the months it changes (a referral's: the month it was made and its report dimensions' month; TRUNCATE:
every month), so a kept report is read again only when a transaction its snapshot did not see changed a month it
shows (smart_app/report/memo.py). SQLite (the demo) gets the tables and no triggers: its report is always counted.

Revision ID: report_memo
Revises: directory_import
Create Date: 2026-12-07 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "report_memo"
down_revision = "directory_import"
branch_labels = None
depends_on = None


def pg_triggers(s: str) -> list[str]:
    """A frozen copy of smart_app/report/memo.py's ``pg_triggers`` as of this revision."""
    note = (f"INSERT INTO {s}.report_change (xid, month) SELECT DISTINCT pg_current_xact_id()::text::bigint, m "
            "FROM ({}) x WHERE m IS NOT NULL ON CONFLICT DO NOTHING")
    by_month = "SELECT month AS m FROM {rows}"
    by_referral = ("SELECT to_char(r.created_at AT TIME ZONE 'UTC', 'YYYY-MM') AS m FROM {rows} r UNION ALL "
                   f"SELECT d.month FROM {{rows}} r JOIN {s}.referral_dims d ON d.referral_id = r.id")
    out = []
    for function, rows_sql in (("report_change_by_month", by_month), ("report_change_by_referral", by_referral)):
        out.append(f"""CREATE OR REPLACE FUNCTION {s}.{function}() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  IF TG_OP IN ('INSERT', 'UPDATE') THEN
    {note.format(rows_sql.format(rows='new_rows'))};
  END IF;
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    {note.format(rows_sql.format(rows='old_rows'))};
  END IF;
  RETURN NULL;
END $$""")
    out.append(f"""CREATE OR REPLACE FUNCTION {s}.report_change_any() RETURNS trigger LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  INSERT INTO {s}.report_change (xid, month) VALUES (pg_current_xact_id()::text::bigint, '0000-00')
  ON CONFLICT DO NOTHING;
  RETURN NULL;
END $$""")
    for table, function in (("referral", "report_change_by_referral"), ("referral_dims", "report_change_by_month"),
                            ("report_event", "report_change_by_month")):
        out += [
            f"CREATE TRIGGER {table}_report_insert AFTER INSERT ON {s}.{table} REFERENCING NEW TABLE AS new_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.{function}()",
            f"CREATE TRIGGER {table}_report_update AFTER UPDATE ON {s}.{table} REFERENCING OLD TABLE AS old_rows "
            f"NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {s}.{function}()",
            f"CREATE TRIGGER {table}_report_delete AFTER DELETE ON {s}.{table} REFERENCING OLD TABLE AS old_rows "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.{function}()",
            f"CREATE TRIGGER {table}_report_truncate AFTER TRUNCATE ON {s}.{table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {s}.report_change_any()",
        ]
    return out


def upgrade() -> None:
    op.create_table("report_change",
                    sa.Column("month", sa.String(length=7), nullable=False),
                    sa.Column("xid", sa.BigInteger(), autoincrement=False, nullable=False),
                    sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("CURRENT_TIMESTAMP"),
                              nullable=False),
                    sa.PrimaryKeyConstraint("month", "xid"))
    op.create_table("report_memo",
                    sa.Column("key", sa.String(length=64), nullable=False),
                    sa.Column("snapshot", sa.Text(), nullable=False),
                    sa.Column("made_at", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("body", sa.Text(), nullable=False),
                    sa.PrimaryKeyConstraint("key"))
    if op.get_bind().dialect.name == "postgresql":
        name = op.get_bind().execute(sa.text("SELECT current_schema()")).scalar()
        for sql in pg_triggers('"' + str(name).replace('"', '""') + '"'):
            op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in ("referral", "referral_dims", "report_event"):
            for what in ("insert", "update", "delete", "truncate"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_report_{what} ON {table}")
        for function in ("report_change_by_month", "report_change_by_referral", "report_change_any"):
            op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    op.drop_table("report_memo")
    op.drop_table("report_change")
