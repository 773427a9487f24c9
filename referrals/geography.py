"""Offline ZIP centroids (the ``zipcodes`` package's bundled data) and distances.

Nothing here calls out: a patient's safe ZIP never leaves the server.
"""

from __future__ import annotations

import math
import re
from functools import lru_cache

_ZIP = re.compile(r"^\s*(\d{5})(?:-\d{4})?\s*$")
EARTH_MILES = 3958.8


@lru_cache(maxsize=1)
def _centroids() -> dict[str, tuple[float, float]]:
    import zipcodes

    # list_all() once (~0.2 s) instead of zipcodes.matching() per lookup (~0.2 s each).
    out: dict[str, tuple[float, float]] = {}
    for z in zipcodes.list_all():
        try:
            out[z["zip_code"]] = (float(z["lat"]), float(z["long"]))
        except (KeyError, TypeError, ValueError):
            continue
    return out


def normalise_zip(value: str | None) -> str | None:
    """'02150' or '02150-1234' -> '02150'; anything else -> None."""
    if not value:
        return None
    m = _ZIP.match(str(value))
    return m.group(1) if m else None


def centroid(zip_code: str | None) -> tuple[float, float] | None:
    z = normalise_zip(zip_code)
    return _centroids().get(z) if z else None


def miles(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Great-circle distance (haversine)."""
    lat1, lon1 = map(math.radians, a)
    lat2, lon2 = map(math.radians, b)
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_MILES * math.asin(min(1.0, math.sqrt(h)))


def all_zips() -> list[str]:
    return list(_centroids())
