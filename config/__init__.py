"""Settings, example deployments, EHR profiles and directory data (data as files)."""
