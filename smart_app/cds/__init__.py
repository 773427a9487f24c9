"""The CDS Hooks service: the "check-in due" card."""
