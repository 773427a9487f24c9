"""Alembic migration scripts (smart_app/migrate.py runs them)."""
