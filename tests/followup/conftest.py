"""The CDS Hooks app fixture of tests/cds (the sandbox EHR as the CDS client), for the follow-up card."""

from tests.cds.test_cds_hooks import cds_app as cds_app
