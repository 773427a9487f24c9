"""Alembic migration scripts (smart_app/store/migrate.py runs them)."""
