"""JSON from outside parties parsed with a bound on how deeply it nests.

Python's json parser recurses once per level: an answer nested a few thousand levels deep (an EHR's ``extension``
inside ``extension``, a CDS request body of 100,000 brackets) raises RecursionError, which no handler of
"the EHR sent something odd" (ValueError) catches, and a page answers 500. ``loads`` refuses such text first with
a ValueError, found by a scan that does not recurse: strings are skipped whole, brackets are counted.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Deepest nesting accepted. A FHIR resource nests a few levels per element (Bundle > entry > resource > element >
# extension > value): real answers stay far below this.
MAX_JSON_DEPTH = 100
_STRINGS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)
_INNERMOST = re.compile(rb"\[\]|\{\}")  # a pair with nothing inside (strings and other text removed)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


class TooDeep(ValueError):
    """JSON nested more deeply than MAX_JSON_DEPTH."""


def depth_of(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> int:
    """How deeply ``text`` nests (strings skipped), without recursion.

    Strings removed and only the brackets kept, the innermost pairs are removed level by level, one pass of the
    regular expression a level (in C, not a Python step per bracket): well-formed text is as deep as its passes.
    Text whose brackets do not all pair up, or nest past ``limit``, is scanned bracket by bracket instead."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return 0  # cannot be deeper than the bound: no scan needed
    brackets = _STRINGS.sub(b"", raw).translate(None, _NOT_BRACKETS)
    passes = 0
    while brackets and passes <= limit:
        brackets, removed = _INNERMOST.subn(b"", brackets)
        if not removed:
            break
        passes += 1
    return passes if not brackets else _scanned(raw)


def _scanned(raw: bytes) -> int:
    depth = deepest = 0
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def check_depth(text: str | bytes, limit: int = MAX_JSON_DEPTH) -> None:
    if depth_of(text, limit) > limit:
        raise TooDeep(f"JSON nested more than {limit} levels deep")


def loads(text: str | bytes, **kwargs: Any) -> Any:
    """``json.loads`` for outside text: ValueError (TooDeep) rather than RecursionError for text nested too deeply."""
    check_depth(text)
    return json.loads(text, **kwargs)
