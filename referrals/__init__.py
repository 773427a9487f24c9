"""Referral directory: model, loaders (our YAML, Open Referral HSDS 3.0, FHIR), geography, ranking, handout."""
