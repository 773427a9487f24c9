"""The queue's counts kept on write (PostgreSQL): closed referrals per cell, and each referral's set of site keys.

The social-work queue counts every referral in scope by every filter value on every page. At a health system's
volume that is a read of the whole referral table per page; but a closed referral changes rarely and its cell
(urgency, status, site, programs, assigned or not, its day) does not depend on the clock. So PostgreSQL keeps:

- ``referral.site_keyset``: the referral's site keys as one value (md5 of the keys, sorted, one a line), set by a
  trigger on ``referral_site``; ``site_keyset`` lists the keys of each set. A user's coverage is then the few sets
  that hold one of their keys, tested on the referral row (and on a cell) instead of hashing every referral id at
  the covered sites.
- ``referral_cell``: how many closed referrals share each cell, per month and per day of ``created_at``, changed by
  statement triggers on ``referral`` (insert, update, delete: the old row's cell loses one, the new row's gains
  one), in the writing statement's transaction. A concurrent change of the same cell waits for the row lock, so
  the counts add up exactly; a page reads the cells and the live referrals in one statement (one snapshot).

smart_app/worklist/queue.py ``Queue.cells`` reads them. The migration ``queue_cells`` creates the same functions
and fills both from the rows present; a database made by ``create_all`` (the tests) gets them from
``create_functions`` below. SQLite (the demo) has neither: its queue counts every referral live.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text

from smart_app.store.models import CLOSED_STORED, Base

CLOSED_SQL = "status IN (" + ", ".join(f"'{s}'" for s in CLOSED_STORED) + ")"

# A referral row's cell, in referral_cell's column order after (grain, bucket); NULLs stored as "" ("?" for
# program_keys, whose NULL means "not indexed yet").
CELL_COLUMNS = ("ehr", "iss", "route_kind", "route_team", "site_keyset", "assigned", "urgent", "status", "site_name",
                "profile", "program_keys")
CELL_OF_ROW = ("COALESCE({t}.ehr, '')", "{t}.iss", "COALESCE({t}.route_kind, '')", "COALESCE({t}.route_team, '')",
               "COALESCE({t}.site_keyset, '')", "{t}.assignee IS NOT NULL", "COALESCE({t}.urgent, false)",
               "{t}.status", "COALESCE({t}.site_name, '')", "{t}.profile", "COALESCE({t}.program_keys, '?')")
NO_PROGRAM_INDEX = "?"
CELLS_LOCK = 7_260_314_411  # the advisory lock key of referral_cell's writers (smart_app/store/migrate.py has its own)


def _cells_of(table: str, sign: int) -> str:
    """The closed rows of ``table`` (a transition table or ``referral``) as cell deltas of ``sign``."""
    cols = ", ".join(f"{expr.format(t='r')} AS {name}" for expr, name in zip(CELL_OF_ROW, CELL_COLUMNS, strict=True))
    return (f"SELECT {cols}, (r.created_at AT TIME ZONE 'UTC')::date AS day, {sign} AS d "
            f"FROM {table} r WHERE r.{CLOSED_SQL}")


def apply_cells(deltas: str) -> str:
    """The statement adding ``deltas`` (rows of the cell columns, ``day`` and ``d``) to referral_cell, per month and
    per day; one row per cell (an upsert may not touch a row twice), nothing for a cell whose changes cancel out,
    in key order (two writers lock the cells they share in the same order: no deadlock between them)."""
    cols = ", ".join(CELL_COLUMNS)
    return (f"INSERT INTO referral_cell (grain, bucket, {cols}, n) "
            f"SELECT g.grain, g.bucket, {cols}, sum(x.d) FROM ({deltas}) x "
            f"CROSS JOIN LATERAL (VALUES ('m', date_trunc('month', x.day)::date), ('d', x.day)) g(grain, bucket) "
            f"GROUP BY g.grain, g.bucket, {cols} HAVING sum(x.d) <> 0 ORDER BY g.grain, g.bucket, {cols} "
            f"ON CONFLICT (grain, bucket, {cols}) DO UPDATE SET n = referral_cell.n + EXCLUDED.n")


def _referral_trigger(op: str) -> str:
    deltas = {"INSERT": [_cells_of("new_rows", 1)], "DELETE": [_cells_of("old_rows", -1)],
              "UPDATE": [_cells_of("old_rows", -1), _cells_of("new_rows", 1)]}[op]
    closed = " OR ".join(f"EXISTS (SELECT 1 FROM {t} r WHERE r.{CLOSED_SQL})"
                         for t in {"INSERT": ["new_rows"], "DELETE": ["old_rows"],
                                   "UPDATE": ["old_rows", "new_rows"]}[op])
    name = f"referral_cell_{op.lower()}"
    # A transaction that changes cells takes the cells' lock first and keeps it to its end: two writers never hold
    # cells the other waits for (a month's cell is shared by its days', so a lock order by key within each statement
    # would not hold across the statements of one transaction). Writes of closed referrals are rare.
    return (f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN "
            f"IF {closed} THEN PERFORM pg_advisory_xact_lock({CELLS_LOCK}); "
            f"{apply_cells(' UNION ALL '.join(deltas))}; END IF; RETURN NULL; END $fn$")


def _keyset_trigger(op: str) -> str:
    """Re-derive the site_keyset of every referral whose site keys this statement changed."""
    touched = {"INSERT": "SELECT referral_id FROM new_rows", "DELETE": "SELECT referral_id FROM old_rows",
               "UPDATE": "SELECT referral_id FROM new_rows UNION SELECT referral_id FROM old_rows"}[op]
    name = f"referral_site_keyset_{op.lower()}"
    return (f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN "
            f"{keyset_update(touched)}; RETURN NULL; END $fn$")


def keyset_update(touched: str) -> str:
    """The statement setting ``referral.site_keyset`` of the referrals ``touched`` selects (and listing new sets)."""
    return (f"WITH sets AS (SELECT t.referral_id, (SELECT md5(string_agg(s.key, E'\\n' ORDER BY s.key)) "
            f"FROM referral_site s WHERE s.referral_id = t.referral_id) AS keyset "
            f"FROM (SELECT DISTINCT referral_id FROM ({touched}) t0) t), "
            f"listed AS (INSERT INTO site_keyset (keyset, key) SELECT DISTINCT sets.keyset, s.key FROM sets "
            f"JOIN referral_site s ON s.referral_id = sets.referral_id WHERE sets.keyset IS NOT NULL "
            f"ON CONFLICT DO NOTHING) "
            f"UPDATE referral r SET site_keyset = sets.keyset FROM sets WHERE r.id = sets.referral_id "
            f"AND r.site_keyset IS DISTINCT FROM sets.keyset")


def _transition(op: str) -> str:
    return {"INSERT": "REFERENCING NEW TABLE AS new_rows", "DELETE": "REFERENCING OLD TABLE AS old_rows",
            "UPDATE": "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows"}[op]


def pg_functions() -> list[str]:
    """The functions and statement triggers (transition tables: one set-based statement per write, whatever its
    number of rows)."""
    out = []
    for op in ("INSERT", "UPDATE", "DELETE"):
        low = op.lower()
        out += [_referral_trigger(op), f"DROP TRIGGER IF EXISTS referral_cell_{low} ON referral",
                f"CREATE TRIGGER referral_cell_{low} AFTER {op} ON referral {_transition(op)} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION referral_cell_{low}()",
                _keyset_trigger(op), f"DROP TRIGGER IF EXISTS referral_site_keyset_{low} ON referral_site",
                f"CREATE TRIGGER referral_site_keyset_{low} AFTER {op} ON referral_site {_transition(op)} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION referral_site_keyset_{low}()"]
    return out


def backfill() -> list[str]:
    """Fill ``referral.site_keyset``, ``site_keyset`` and ``referral_cell`` from the rows present (the migration;
    the referral tables are locked against writes meanwhile). Set-based: one statement each."""
    return [
        "LOCK TABLE referral, referral_site IN SHARE ROW EXCLUSIVE MODE",
        "CREATE TEMP TABLE keyset_of ON COMMIT DROP AS SELECT referral_id, "
        "md5(string_agg(key, E'\\n' ORDER BY key)) AS keyset FROM referral_site GROUP BY referral_id",
        "INSERT INTO site_keyset (keyset, key) SELECT DISTINCT k.keyset, s.key FROM keyset_of k "
        "JOIN referral_site s ON s.referral_id = k.referral_id ON CONFLICT DO NOTHING",
        # The cell triggers see this UPDATE: made after it (below), they start from the filled rows.
        "UPDATE referral r SET site_keyset = k.keyset FROM keyset_of k WHERE r.id = k.referral_id "
        "AND r.site_keyset IS DISTINCT FROM k.keyset",
        "DELETE FROM referral_cell",
        apply_cells(_cells_of("referral", 1)),
    ]


def create_functions(connection: Any) -> None:
    for sql in pg_functions():
        connection.execute(text(sql))


@event.listens_for(Base.metadata, "after_create")
def _create_functions(_metadata: Any, connection: Any, **_kw: Any) -> None:
    """Tests build their databases with create_all: the same triggers as the migration. Only where they are missing:
    create_all also runs on a migrated database, where the runtime role may not replace the owner's functions."""
    if connection.dialect.name == "postgresql" and connection.execute(text(
            "SELECT to_regclass('referral') IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_trigger WHERE "
            "tgname = 'referral_cell_insert' AND tgrelid = to_regclass('referral'))")).scalar():
        create_functions(connection)
