"""The program report: counted events, suppression, views."""
