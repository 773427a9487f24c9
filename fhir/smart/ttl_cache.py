"""A small per-key cache with a time to live and a bound on its entries, refreshing ahead: in the last fifth of
an entry's life a read still returns the entry at once and refetches it in a background thread, so steady launch
traffic never waits on a discovery document, a JWKS or a style file being read again. A failed background
refetch leaves the entry as it was (until it expires, when the next read fetches in the foreground and sees the
error). Keys may come from the EHR (a ``smart_style_url``), so at most ``max_entries`` are kept: a new key beyond
that replaces the entry that expires first. The figures that keep this cache are in
docs/decisions/0003-wire-caches.md and in ``make bench`` (bench_launch)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")
log = logging.getLogger(__name__)


class RefreshingCache(Generic[V]):
    def __init__(self, ttl_seconds: float, *, max_entries: int = 256, clock: Callable[[], float] = time.monotonic,
                 refresh_ahead: float = 0.2):
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self.refresh_ahead = refresh_ahead
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, float, V]] = {}  # key -> (expires, ttl used, value)
        self._refreshing: set[str] = set()

    def get(self, key: str, fetch: Callable[[], V], *, ttl_seconds: float | None = None, force: bool = False) -> V:
        ttl = self.ttl if ttl_seconds is None else ttl_seconds
        now = self._clock()
        with self._lock:
            hit = self._entries.get(key)
            fresh = hit is not None and hit[0] > now and not force
            stale_soon = fresh and hit[0] - now < hit[1] * self.refresh_ahead and key not in self._refreshing
            if stale_soon:
                self._refreshing.add(key)
        if fresh:
            if stale_soon:
                threading.Thread(target=self._refresh, args=(key, fetch, ttl), daemon=True).start()
            return hit[2]
        # Fetch outside the lock: a slow EHR must not hold up lookups for other keys.
        return self._store(key, fetch(), ttl)

    def __len__(self) -> int:
        return len(self._entries)

    def _store(self, key: str, value: V, ttl: float) -> V:
        with self._lock:
            if key not in self._entries and len(self._entries) >= self.max_entries:
                del self._entries[min(self._entries, key=lambda k: self._entries[k][0])]
            self._entries[key] = (self._clock() + ttl, ttl, value)
        return value

    def _refresh(self, key: str, fetch: Callable[[], V], ttl: float) -> None:
        try:
            self._store(key, fetch(), ttl)
        except Exception as exc:  # the entry stays until it expires; the foreground fetch then reports
            log.info("background refresh failed (%s)", exc.__class__.__name__)
        finally:
            with self._lock:
                self._refreshing.discard(key)

    def discard(self, key: str) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
