"""Checks `make lint` runs beside ruff."""
