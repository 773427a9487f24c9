"""Consent and chart write-back: the plan the patient agrees to, the consent and confirmation pages."""
