"""Chart writes sent outside the web request: the worker, row status, the closed loop."""
