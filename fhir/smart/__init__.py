"""SMART App Launch 2.2 client: discovery, authorization (PKCE, state, nonce), client
authentication, token exchange/refresh and id_token verification.

Nothing here depends on Flask: the web layer (smart_app/launch/views.py) keeps the
per-launch secrets server-side and passes them in.
"""
