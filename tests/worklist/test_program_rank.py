"""The program sort's expression is kept per program names and key sets: built once while they stay the same, and
built anew (with the new order) when a program is renamed or a referral brings a new key set."""

from __future__ import annotations

import pytest
from sqlalchemy.dialects import postgresql

from smart_app.worklist.queue import Programs

pytestmark = pytest.mark.worklist


def _sql(programs: Programs) -> str:
    return str(programs.rank().compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True}))


def test_rank_is_built_once_per_names_and_key_sets():
    names = {"k1": "Casa Myrna", "k2": "HAVEN at MGH", "k3": "Boston Area Rape Crisis Center"}
    sets = {"k1", "k2,k3", "k1,k2", ""}
    first = Programs(names=dict(names), key_sets=set(sets))
    again = Programs(names=dict(reversed(names.items())), key_sets=set(sets))
    assert first.rank() is again.rank()
    # k1 (Casa Myrna) is 1, k2,k3 ranks by Boston Area (0), k1,k2 by Casa Myrna (1); no program last (3)
    assert _sql(first) == ("CASE referral.program_keys WHEN 'k1' THEN 1 WHEN 'k1,k2' THEN 1 WHEN 'k2,k3' THEN 0 "
                           "ELSE 3 END")

    renamed = Programs(names={**names, "k1": "Armour Project"}, key_sets=set(sets))
    assert renamed.rank() is not first.rank()
    assert _sql(renamed) == ("CASE referral.program_keys WHEN 'k1' THEN 0 WHEN 'k1,k2' THEN 0 WHEN 'k2,k3' THEN 1 "
                             "ELSE 3 END")

    grown = Programs(names=dict(names), key_sets={*sets, "k2"})
    assert "WHEN 'k2' THEN 2" in _sql(grown)


def test_rank_of_unindexed_referrals_reads_their_program_rows():
    programs = Programs(names={"k1": "Casa Myrna"}, key_sets={None, "k1"})
    assert "referral_program" in _sql(programs)
    assert _sql(Programs(names={}, key_sets={"k1"})) == "0"
