"""The queue at hospital scale on PostgreSQL: 50,000 referrals in the social worker's scope (and 10,000 outside
it: another site of the same EHR, the same sites of another EHR). No cap: the oldest open urgent referral is on
the first page of "urgent, oldest first"; every count and filter agrees with a tally made independently from what
was inserted; paging reaches the last referral. (Speed: benchmarks/bench_worklist.py, never asserted here.)"""

from __future__ import annotations

import html
import re
import secrets
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from sandbox_ehr.harness.bulk import CLOSED_RAW, OUT_OF_SCOPE_SITE, Made, insert_referrals
from smart_app import create_app
from tests.conftest import app_config, launch_for
from tests.support import tools
from tests.worklist.support import EHR1, EHR2, SNOMED_SW, role, worker_context

# One xdist worker runs the module, so its module fixture is built once (`--dist loadgroup`, Makefile).
pytestmark = [pytest.mark.routing, pytest.mark.worklist, pytest.mark.postgres, pytest.mark.xdist_group("queue_scale")]

IN_SCOPE = 50_000
PAGE = 50
URGENT_DUE, ROUTINE_DUE = timedelta(hours=24), timedelta(days=2)  # no stored due time: counted around the clock
OPEN_FHIR = {"requested", "accepted", "in-progress", "on-hold"}
LEGACY = {"new": "requested", "contacted": "in-progress", "closed": "completed"}
SW_SCOPE = "openid fhirUser user/Task.rus user/ServiceRequest.rus"


@pytest.fixture(scope="module")
def scale() -> Iterator[tuple[Any, Any, str, list[Made]]]:
    """An app on a fresh PostgreSQL schema with the referrals inserted once for the module's tests."""
    with tools.postgres_schema(tools.postgres_base_url()) as url:  # no PostgreSQL: skipped; under CI, a failure
        app = create_app(app_config(url,
                                    WORKLIST={"due": {"urgent": "24 hours", "routine": "2 days"}},
                                    WORKLIST_PAGE_SIZE=PAGE))
        try:
            now = datetime.now(UTC)
            # The queue's clock is pinned to the tally's: a referral crossing a due or age boundary while the tests run
            # would otherwise be counted on one side by the tally and on the other by the queue.
            app.extensions["clock"] = lambda: now
            made = insert_referrals(app, IN_SCOPE, iss=EHR1, now=now, seed=1)
            insert_referrals(app, 5_000, iss=EHR1, now=now, seed=2, site=OUT_OF_SCOPE_SITE)
            insert_referrals(app, 5_000, iss=EHR2, now=now, seed=3)
            with app.extensions["db_engine"].begin() as conn:
                conn.execute(text("ANALYZE"))
            client = app.test_client()
            with client.session_transaction() as sess:
                sess["bid"] = secrets.token_urlsafe(24)
            ctx = worker_context("Practitioner/sw", "Sam Social",
                                 [role([SNOMED_SW], organizations=["Organization/org-bwh", "Organization/org-mgh"])],
                                 SW_SCOPE)
            lid = launch_for(app, client, ctx, iss=EHR1, kind="standalone")
            yield app, client, lid, made
        finally:
            app.extensions["db_engine"].dispose()


# -- the independent tally: plain Python over what was inserted ------------------------------------------------------
def _status(m: Made) -> str:
    return LEGACY.get(m.status, m.status)


def _open(m: Made) -> bool:
    return m.status not in CLOSED_RAW


def _overdue(m: Made, now: datetime) -> bool:
    return (not m.contacted and _status(m) in OPEN_FHIR
            and now - m.created_at > (URGENT_DUE if m.urgent else ROUTINE_DUE))


def _age(m: Made, now: datetime) -> str:
    hours = (now - m.created_at).total_seconds() / 3600
    return "under_1_day" if hours < 24 else "1_to_7_days" if hours < 24 * 7 else "over_7_days"


def _site(m: Made) -> str:
    return m.site_name or "Site not recorded"


def _facts(m: Made, now: datetime) -> dict[str, set[str]]:
    """The filter values that show this referral, per filter (written from the queue's rules, not its code)."""
    urgency = {"urgent" if m.urgent else "routine"} | ({"overdue"} if _overdue(m, now) else set())
    return {"urgency": urgency, "status": {_status(m), "open" if _open(m) else "closed", "all"},
            "site": {_site(m)}, "program": set(m.programs), "age": {_age(m, now)}}


class Tally:
    """Counts over the inserted referrals, in plain Python."""

    def __init__(self, made: list[Made], now: datetime) -> None:
        self.rows = [(m, _facts(m, now)) for m in made]

    def matching(self, filters: dict[str, str]) -> list[Made]:
        return [m for m, facts in self.rows if all(not v or v in facts[f] for f, v in filters.items())]

    def counts(self, filters: dict[str, str], facet: str) -> Counter[str]:
        """Referrals per value of ``facet`` with the other filters kept."""
        others = {k: v for k, v in filters.items() if k != facet}
        return Counter(v for m, facts in self.rows if all(not x or x in facts[f] for f, x in others.items())
                       for v in facts[facet])


def _tally(made: list[Made], filters: dict[str, str], now: datetime) -> list[Made]:
    return Tally(made, now).matching(filters)


def _oldest_first(made: list[Made]) -> list[str]:
    return [m.id for m in sorted(made, key=lambda m: (m.created_at, m.id))]


# -- reading the page --------------------------------------------------------------------------------------------------
def _get(client, lid: str, query: str) -> str:
    resp = client.get(f"/l/{lid}/worklist{query}")
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def _rows(page: str) -> list[str]:
    return re.findall(r'data-testid="referral-([^"]+)"', page)


def _counts(page: str) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for facet, value, n in re.findall(r'data-testid="filter-(\w+)-([^"]+)"[^>]*>[^<]*<span class="count">\((\d+)\)',
                                      page):
        out.setdefault(facet, {})[html.unescape(value)] = int(n)
    return out


def _shown(page: str) -> tuple[int, int]:
    line = page.split('data-testid="shown-count"')[1].split("</p>")[0].replace(",", "")
    if "matching" in line:
        shown, total = re.search(r"of (\d+) matching referrals shown \((\d+) in all\)", line).groups()
    else:
        shown, total = re.search(r"(\d+) of (\d+) referrals shown", line).groups()
    return int(shown), int(total)


def _now(app: Any) -> datetime:
    return app.extensions["clock"]()


# -- the tests -------------------------------------------------------------------------------------------------------
def test_the_oldest_open_urgent_referral_is_first_on_urgent_oldest_first(scale):
    app, client, lid, made = scale
    now = _now(app)
    urgent_open = _tally(made, {"urgency": "urgent", "status": "open"}, now)
    page = _get(client, lid, "?urgency=urgent&sort=oldest")
    rows = _rows(page)
    assert len(rows) == PAGE and rows == _oldest_first(urgent_open)[:PAGE]
    oldest = min(urgent_open, key=lambda m: (m.created_at, m.id))
    assert rows[0] == oldest.id and (now - oldest.created_at).days >= 80  # months old: no cap left it out
    assert _shown(page) == (len(urgent_open), IN_SCOPE)
    # The default view (triage) starts with the overdue urgent ones, longest waiting first.
    overdue = [m for m in _tally(made, {"urgency": "overdue", "status": "open"}, now) if m.urgent]
    assert _rows(_get(client, lid, ""))[:PAGE] == _oldest_first(overdue)[:PAGE]


def test_every_count_and_filter_agrees_with_an_independent_tally(scale):
    app, client, lid, made = scale
    tally = Tally(made, _now(app))
    page = _get(client, lid, "")  # open referrals (the default), urgent first
    counts = _counts(page)
    base = {"status": "open"}
    expected_sites = tally.counts(base, "site")
    assert counts["site"] == dict(expected_sites)
    assert counts["program"] == dict(tally.counts(base, "program"))
    assert counts["urgency"] == {u: tally.counts(base, "urgency")[u] for u in ("urgent", "overdue", "routine")}
    assert counts["age"] == {a: tally.counts(base, "age")[a] for a in ("under_1_day", "1_to_7_days", "over_7_days")}
    # Status counts keep the other filters (none here) and count every status.
    assert counts["status"] == {s: tally.counts(base, "status")[s] for s in counts["status"]}
    assert counts["status"]["all"] == IN_SCOPE and counts["status"]["completed"] > 0
    assert _shown(page) == (len(tally.matching(base)), IN_SCOPE)
    # A shared program name counts each referral once, even one naming both of its programs.
    both = [m for m in tally.matching(base) if {"legal-a", "legal-b"} <= set(m.program_ids)]
    legal = tally.matching({**base, "program": "DV Legal Clinic"})
    assert both and counts["program"]["DV Legal Clinic"] == len(legal) < len(legal) + len(both)
    # Every single filter, and a combination: the number shown, the first page in order, and every facet's
    # counts under the chosen filters.
    cases = [{"status": s} for s in ("open", "closed", "all", "requested", "in-progress", "completed")]
    cases += [{"status": "all", "urgency": u} for u in ("urgent", "overdue", "routine")]
    cases += [{"status": "all", "site": s} for s in expected_sites]
    cases += [{"status": "all", "age": a} for a in ("under_1_day", "1_to_7_days", "over_7_days")]
    cases += [{"status": "all", "program": p} for p in counts["program"]]
    cases += [{"status": "open", "urgency": "urgent", "site": "Massachusetts General Hospital",
               "program": "HAVEN at MGH", "age": "over_7_days"}]
    for filters in cases:
        query = "?" + "&".join(f"{k}={v}" for k, v in filters.items()) + "&sort=oldest"
        page = _get(client, lid, query)
        expected = tally.matching(filters)
        assert _shown(page)[0] == len(expected), filters
        assert _rows(page) == _oldest_first(expected)[:PAGE], filters
        counts = _counts(page)
        for facet in ("urgency", "site", "age", "program"):
            want = tally.counts(filters, facet)
            assert counts[facet] == {value: want[value] for value in counts[facet]}, (filters, facet)
            assert {v for v, n in want.items() if n} <= set(counts[facet]), (filters, facet)  # none left out


def test_paging_reaches_the_last_referral_in_every_order(scale):
    app, client, lid, made = scale
    now = _now(app)
    everything = _oldest_first(made)
    pages = -(-IN_SCOPE // PAGE)
    last = _get(client, lid, f"?status=all&sort=oldest&page={pages}")
    assert _rows(last) == everything[(pages - 1) * PAGE:] and f"Page {pages} of {pages}" in last
    assert _rows(_get(client, lid, "?status=all&sort=oldest&page=999999")) == everything[(pages - 1) * PAGE:]
    assert _rows(_get(client, lid, "?status=all&sort=newest&page=1"))[0] == everything[-1]
    middle = pages // 2
    assert _rows(_get(client, lid, f"?status=all&sort=oldest&page={middle}")) == \
        everything[(middle - 1) * PAGE:middle * PAGE]
    # The open urgent referrals, page by page to the end: each once, oldest first.
    urgent_open = _oldest_first(_tally(made, {"urgency": "urgent", "status": "open"}, now))
    n = -(-len(urgent_open) // PAGE)
    assert _rows(_get(client, lid, f"?urgency=urgent&sort=oldest&page={n}")) == urgent_open[(n - 1) * PAGE:]


def test_triage_pages_cross_each_of_its_tiers_without_skipping_or_repeating(scale):
    """Urgent first reads its page tier by tier (overdue urgent, overdue routine, urgent, routine; open before
    closed in each): the pages on either side of every tier's border, and the last, are the Python order's."""
    app, client, lid, made = scale
    now = _now(app)

    def tier(m: Made) -> tuple[int, int, int]:
        return (0 if _overdue(m, now) else 1, 0 if m.urgent else 1, 0 if _open(m) else 1)

    order = [m.id for m in sorted(made, key=lambda m: (*tier(m), m.created_at, m.id))]
    sizes = Counter(tier(m) for m in made)
    borders, start = [], 0
    for key in sorted(sizes):
        start += sizes[key]
        borders.append(start)
    pages = -(-len(order) // PAGE)
    wanted = {1, pages} | {b // PAGE + d for b in borders[:-1] for d in (0, 1, 2)}
    assert len(borders) >= 5  # the data reaches the tiers this walks over
    for page in sorted(p for p in wanted if 1 <= p <= pages):
        rows = _rows(_get(client, lid, f"?status=all&page={page}"))
        assert rows == order[(page - 1) * PAGE:page * PAGE], page


def test_search_finds_one_referral_among_fifty_thousand(scale):
    from fhir.builders import reference_code

    _app, client, lid, made = scale
    target = made[31_337]
    resp = client.post(f"/l/{lid}/worklist/search", data={"by": "mrn", "q": target.mrn.lower()})
    assert target.mrn.lower() not in resp.headers["Location"].lower()
    assert _rows(client.get(resp.headers["Location"]).get_data(as_text=True)) == [target.id]
    assert _rows(_get(client, lid, f"?ref={reference_code(target.id)}")) == [target.id]
