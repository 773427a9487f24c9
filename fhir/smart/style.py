"""SMART styling (App Launch ``smart_style_url``): read the EHR's style JSON once at launch and keep
only values that are safe to put into a stylesheet (colours, font families, small dimensions).

The app turns what is kept into CSS custom properties plus a few base rules, so it looks at home in
the EHR frame. Anything unexpected is dropped: the style file comes from the EHR, but it ends up in CSS.
"""

from __future__ import annotations

import re
from typing import Any

import requests

from fhir import json_depth
from fhir.smart.ttl_cache import RefreshingCache

_COLOR = re.compile(r"^(#[0-9a-fA-F]{3,8}|rgba?\(\s*[0-9.%\s,]{1,40}\)|[a-zA-Z]{3,20})$")
_FONT = re.compile(r"^[A-Za-z0-9 ,\-'\"]{1,120}$")
_DIM = re.compile(r"^\d{1,3}(\.\d{1,2})?(px|em|rem)$")
MAX_BYTES = 16_384


def _kind(key: str) -> re.Pattern[str] | None:
    if key.startswith("color_"):
        return _COLOR
    if key.startswith("font_family_"):
        return _FONT
    if key.startswith("dim_"):
        return _DIM
    return None


def sanitize_style(doc: Any) -> dict[str, str]:
    """The usable subset of a SMART style document ({key: value}, keys as in the spec)."""
    if not isinstance(doc, dict):
        return {}
    out: dict[str, str] = {}
    for key, value in doc.items():
        if not (isinstance(key, str) and re.fullmatch(r"[a-z_]{3,40}", key) and isinstance(value, str)):
            continue
        pattern = _kind(key)
        value = value.strip()
        if pattern and pattern.match(value):
            out[key] = value
    return out


def fetch_style(url: str | None, *, http: requests.Session, timeout: float = 5.0) -> dict[str, str]:
    """Fetch and sanitize ``smart_style_url``; {} on any problem (styling is never worth a failed launch).
    ``http`` is the app's session, behind the outbound URL policy (fhir/url_policy.py): a URL on a host not
    derived from the allow-listed EHRs is never fetched."""
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        return {}
    try:
        resp = http.get(url, headers={"Accept": "application/json"}, timeout=timeout, allow_redirects=False)
        if resp.status_code != 200 or len(resp.content) > MAX_BYTES:
            return {}
        return sanitize_style(json_depth.loads(resp.content))
    except (requests.RequestException, ValueError):
        return {}


def cached_style(url: str | None, cache: RefreshingCache[dict[str, str]], *, http: requests.Session,
                 timeout: float = 5.0) -> dict[str, str]:
    """``fetch_style`` through ``cache`` (keyed by URL): an EHR serves one style file to every launch, so
    fetching it again on each /callback would only add a sequential round trip to the launch. What could not
    be read is kept as {} too, so a broken style URL is not asked again on every launch."""
    if not isinstance(url, str) or not url:
        return {}
    return dict(cache.get(url, lambda: fetch_style(url, http=http, timeout=timeout)))


def style_css(style: dict[str, str]) -> str:
    """CSS for a sanitized style: ``--smart-<key>`` custom properties and base rules."""
    clean = sanitize_style(style)
    lines = [":root {"]
    lines += [f"  --smart-{key.replace('_', '-')}: {value};" for key, value in sorted(clean.items())]
    lines.append("}")
    body = []
    if "font_family_body" in clean:
        body.append("font-family: var(--smart-font-family-body);")
    if "color_background" in clean:
        body.append("background-color: var(--smart-color-background);")
    if "color_text" in clean:
        body.append("color: var(--smart-color-text);")
    if body:
        lines.append("body { " + " ".join(body) + " }")
    if "font_family_heading" in clean:
        lines.append("h1, h2, h3 { font-family: var(--smart-font-family-heading); }")
    return "\n".join(lines) + "\n"
