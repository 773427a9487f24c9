"""Sandbox EHR: a SMART App Launch 2.2 authorization server and a FHIR R4 store for demo and tests.

A test harness, not a product: the app must work with any conformant EHR.
"""
