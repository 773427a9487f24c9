"""Offline ZIP centroids and distances.

Nothing here calls out: a patient's safe ZIP never leaves the server.

The centroids come from the ``zipcodes`` package's bundled data, kept as a compact table
(``referrals/data/zip_centroids.bin``: sorted ZIPs and their latitude/longitude in 1/10,000 degree,
the source's own precision, as little-endian int32 columns). Loading the package itself at run time
kept its whole record cache alive in every worker, many times the memory and start-up time of this table
(figures in ``docs/decisions/0005-directory-memory-measures.md``).
``python -m referrals.geography`` rebuilds the file from the installed ``zipcodes`` (the ``build`` extra, in
the dev venv; the app itself does not install it);
``tests/referrals/test_geography.py`` fails if the two ever disagree.
"""

from __future__ import annotations

import math
import re
import sys
from array import array
from bisect import bisect_left
from functools import lru_cache
from pathlib import Path

_ZIP = re.compile(r"^\s*(\d{5})(?:-\d{4})?\s*$")
EARTH_MILES = 3958.8
TABLE = Path(__file__).with_name("data") / "zip_centroids.bin"
SCALE = 10_000  # the source gives 4 decimals: stored exactly as integers


class _Centroids:
    """Three parallel int32 columns: ZIP (as a number), latitude and longitude × SCALE."""

    def __init__(self, raw: bytes):
        n = len(raw) // 12
        self.zips, self.lats, self.lons = array("i"), array("i"), array("i")
        for col, start in ((self.zips, 0), (self.lats, 4 * n), (self.lons, 8 * n)):
            col.frombytes(raw[start:start + 4 * n])
            if sys.byteorder != "little":
                col.byteswap()

    def get(self, zip5: str) -> tuple[float, float] | None:
        key = int(zip5)
        i = bisect_left(self.zips, key)
        if i < len(self.zips) and self.zips[i] == key:
            return self.lats[i] / SCALE, self.lons[i] / SCALE
        return None

    def __iter__(self):
        return (f"{z:05d}" for z in self.zips)


@lru_cache(maxsize=1)
def _centroids() -> _Centroids:
    return _Centroids(TABLE.read_bytes())


def build_table(records: list[dict]) -> bytes:
    """The table's bytes from ``zipcodes.list_all()``-shaped records (rows without coordinates skipped)."""
    rows = []
    for z in records:
        try:
            rows.append((int(z["zip_code"]), round(float(z["lat"]) * SCALE), round(float(z["long"]) * SCALE)))
        except (KeyError, TypeError, ValueError):
            continue
    rows.sort()
    out = b""
    for k in range(3):
        col = array("i", (r[k] for r in rows))
        if sys.byteorder != "little":
            col.byteswap()
        out += col.tobytes()
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


if __name__ == "__main__":  # rebuild the table from the installed zipcodes package
    import zipcodes

    TABLE.parent.mkdir(exist_ok=True)
    TABLE.write_bytes(build_table(zipcodes.list_all()))
    print(f"wrote {TABLE} ({TABLE.stat().st_size:,} bytes)")
