"""Running the app: settings access, logs and metrics, audit, health, errors, headers, rate limits, translations,
start-up checks, housekeeping and warm-up."""
