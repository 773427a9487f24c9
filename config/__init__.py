"""Settings (one typed model: config/settings.py), example deployments, EHR profiles and directory data."""
