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



@contextmanager
def imports_outside_the_collector() -> Iterator[None]:
    """No cyclic collection while a process imports its modules, and what the imports made frozen afterwards.
    Modules, classes, ORM and settings models live as long as the process: every automatic collection during the
    imports walked them again and found almost nothing, and an app's own collect-and-freeze at the end of start-up
    walked them once more. Frozen (moved to the collector's permanent generation) they are walked by neither; the
    few cycles the imports left as garbage stay. Collection resumes (if it was on) when the block ends."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
