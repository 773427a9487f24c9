"""The referral ranking is kept per launch for the minute: a reload ranks nothing again, but another launch,
other inputs or a new minute always rank afresh, so no launch is shown another's programs."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

import pytest

import smart_app.ranking.memo as urgent
from referrals.ranking import RankingQuery
from tests.conftest import default_context


@pytest.fixture
def ranks(app, monkeypatch):
    calls: list[RankingQuery] = []
    real = urgent.rank

    def counting(index, query, *args, **kwargs):
        calls.append(query)
        return real(index, query, *args, **kwargs)

    monkeypatch.setattr(urgent, "rank", counting)
    now = [datetime(2026, 3, 2, 15, 0, 5, tzinfo=UTC)]  # a Monday, 10:00 in Boston
    app.extensions["clock"] = lambda: now[0]
    yield calls, now
    app.extensions.pop("clock", None)


def _site_note(client, lid: str) -> str:
    html = client.get(f"/l/{lid}/referrals").get_data(as_text=True)
    return html.split('data-testid="site-note">', 1)[1].split("</p>", 1)[0]


def test_each_launch_gets_its_own_ranking(client, make_launch, ranks):
    unplaced = copy.deepcopy(default_context())
    unplaced["encounter"] = None
    placed, elsewhere = make_launch(client), make_launch(client, context=unplaced)
    for _ in range(2):
        assert "works at this location" in _site_note(client, placed)
        assert "does not say where this visit is" in _site_note(client, elsewhere)


def test_reload_within_the_minute_ranks_once_and_a_new_minute_or_launch_ranks_again(client, make_launch, ranks):
    calls, now = ranks
    first = make_launch(client)
    _site_note(client, first)
    assert len(calls) == 1
    now[0] += timedelta(seconds=30)  # same minute
    _site_note(client, first)
    assert len(calls) == 1
    now[0] += timedelta(seconds=30)  # the next minute: what is open may have changed
    _site_note(client, first)
    assert len(calls) == 2
    second = make_launch(client)  # the same context, another launch: never the first one's ranking
    _site_note(client, second)
    assert len(calls) == 3


def test_other_search_inputs_rank_again(client, make_launch, ranks):
    calls, _ = ranks
    lid = make_launch(client)
    _site_note(client, lid)
    client.post(f"/l/{lid}/referrals", data={"action": "search", "safe_zip": "02151", "needs": ["legal"]})
    html = client.get(f"/l/{lid}/referrals").get_data(as_text=True)
    assert any(c.safe_zip == "02151" and c.needs == ("legal",) for c in calls)
    assert 'value="02151"' in html
