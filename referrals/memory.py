"""The cyclic collector while a large directory is loaded."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """No cyclic collection while a directory is loaded or indexed. A load allocates millions of long-lived,
    acyclic objects, so every full collection it triggers walks everything loaded so far and finds nothing
    (bench_directory prints the collector's CPU with and without this). Reference counting still frees the
    parsed source; collection resumes (if it was on) when the block ends."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()

