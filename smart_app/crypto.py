"""Encryption at rest for tokens and PHI in launch records (Fernet: AES-128-CBC + HMAC)."""

from __future__ import annotations

import json
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from flask import Flask, current_app


def init_app(app: Flask) -> None:
    key = app.config.get("TOKEN_ENCRYPTION_KEY") or ""
    if not key:
        raise RuntimeError("TOKEN_ENCRYPTION_KEY is required (a Fernet key)")
    app.extensions["fernet"] = Fernet(key.encode() if isinstance(key, str) else key)


def encrypt_json(value: Any) -> bytes:
    return current_app.extensions["fernet"].encrypt(json.dumps(value).encode())


def decrypt_json(blob: bytes | None) -> Any:
    if not blob:
        return None
    try:
        return json.loads(current_app.extensions["fernet"].decrypt(blob))
    except InvalidToken:
        # Key rotated: treat the record as gone rather than crash a page.
        return None
