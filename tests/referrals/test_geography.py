"""The compact ZIP-centroid table is the zipcodes package's data, exactly."""

from __future__ import annotations

import pytest
import zipcodes

from referrals import geography


def test_table_holds_every_zipcodes_centroid_exactly():
    records = zipcodes.list_all()
    assert geography.TABLE.read_bytes() == geography.build_table(records), \
        "zipcodes changed: run `python -m referrals.geography` to rebuild the table"
    for z in records[::997]:
        assert geography.centroid(z["zip_code"]) == (float(z["lat"]), float(z["long"]))


@pytest.mark.parametrize("value,expected", [
    ("02115", (42.3427, -71.0922)), ("02150-1234", None), ("99999", None), ("00501", (40.8154, -73.0451)),
    ("abc", None), ("", None), (None, None),
])
def test_centroid_lookup(value, expected):
    got = geography.centroid(value)
    if value == "02150-1234":  # ZIP+4 is normalised to its ZIP
        assert got == geography.centroid("02150") and got is not None
    else:
        assert got == expected


def test_zipcodes_package_is_not_loaded_by_a_lookup():
    import subprocess
    import sys

    code = ("import sys; from referrals.geography import centroid; centroid('02115'); "
            "print('zipcodes' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
