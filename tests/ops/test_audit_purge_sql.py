"""The purge functions the code makes (create_all, from the shared template in smart_app/store/partitions.py) are,
to the character, those the migration installed on a real database: a change to the template's SQL needs a new
migration that installs it (and then this test compares with that one)."""

from __future__ import annotations

from smart_app.ops.audit import pg_partition_functions
from smart_app.report.retention import pg_functions
from smart_app.store.migrations.versions import monthly_partitions as installed

SCHEMA = '"some schema"'


def test_the_audit_partition_functions_are_the_installed_ones():
    assert pg_partition_functions(SCHEMA) == installed.audit_functions(SCHEMA)


def test_the_report_partition_functions_are_the_installed_ones():
    assert pg_functions(SCHEMA) == installed.report_functions(SCHEMA)
