"""One file per revision; each down_revision is the head it was written on."""
