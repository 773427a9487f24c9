"""Private screening: gate, instrument, danger check, result, urgent box, check-in rules."""
