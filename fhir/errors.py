"""One base for "the EHR failed": every failure of a call to the EHR (an HTTP error, a timeout, an answer the
app cannot use, a failed discovery, token exchange or id_token check) derives from ``FhirWireError``, so a
view that only needs to know the EHR let it down catches that once.

Mistakes of our own deployment (``ClientAuthError``: a missing key or secret) and refusals of an inbound call
(``CdsAuthError``) are not wire failures and do not derive from it.
"""

from __future__ import annotations


class FhirWireError(Exception):
    """A call to the EHR failed or its answer could not be used."""
