"""Chart writes sent outside the web request: stored before sent, sent at most once per claim, retried safely.

Life of a row (``smart_app.store.models.OutboxItem``); the FHIR wire work it calls (builders, client, labels)
lives in ``fhir/``::

    pending --claim--> sending --2xx--> written (server id, label check)
                          |--timeout/5xx/429--> pending (backoff + jitter, Retry-After honoured)
                          |--refused (4xx) or tries used up--> pending once more ("final retry")
                          |--final retry fails--> failed (kept, reason shown to clinician + social work)
                          |--may have been filed, cannot be found out--> check (a person checks the chart)

Resource JSON is encrypted at rest (smart_app.store.crypto); ``last_error`` and ``label_detail`` hold only HTTP
status, reason class and label codes, and log lines name resource type + row id only.

The modules, in the order a row meets them:

- ``enqueue``: the consent request stores the planned writes as pending rows.
- ``worker``: the loop: claim a batch, send it, heartbeat, housekeeping; ``cli`` runs it.
- ``claim``: which worker may send which rows, and the lease fence before each send.
- ``dispatch``: a referral's rows in order, to ``send_transaction``, ``send_single`` or ``send_status``.
- ``payload`` and ``references``: the stored write decrypted, its links to sibling writes resolved.
- ``clients`` and ``capabilities``: the FHIR client for a row; whether it may rely on If-None-Exist.
- ``lookup``: is an earlier send already in the chart (before any re-send whose outcome is unknown)?
- ``written`` and ``verify``: a write the EHR has, and whether it kept the security labels.
- ``retry`` and ``outcomes``: backoff, Retry-After and the one final retry; where a row goes when not written.
- ``status`` and ``closed_loop``: write status in plain words; a social worker's status change queued for the
  chart.
"""
