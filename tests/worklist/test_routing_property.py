"""Routing is total, as a property: over generated deployments (EHRs answering on several ``iss`` values, exact and
by pattern; sites in ``Location.partOf`` / ``Organization.partOf`` trees; ``worklist.coverage`` rules by user and by
role; routing teams with sites and members, fallback teams; social workers and program managers whose
PractitionerRoles do or do not name places) and generated referrals (any site, a site no rule names, a launch with
no encounter, on any ``iss`` of their EHR), every referral is in the queue of at least one social worker of its EHR
(someone who works it, not only a program manager, who reads), and in the queue of nobody of another EHR.

Through the app: referrals made by the consent page (routing at creation, as a clinician's launch makes them), and
each social worker's queue page (GET /l/<lid>/worklist, every status) read as that worker's standalone launch
sees it.

The staff are the deployment's: a team's named members and the users ``worklist.coverage`` names are among the
generated social workers of an EHR the team serves (a team nobody at that EHR works is a deployment mistake no
routing can see at referral time; one of program managers alone stops start-up), and every EHR has at least one
social worker.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from config.current import init_app, settings_of
from sandbox_ehr.harness.launches import SNOMED_SW, app_config, default_context, launch_for, role, worker_context
from smart_app import create_app
from smart_app.store.db import session_scope
from smart_app.store.models import ReferralRecord
from tests.writeback.support import SCREENING, consent

pytestmark = [pytest.mark.routing, pytest.mark.worklist]

BASE = "http://127.0.0.1:9"  # nothing listens: the consent's writes stay queued, at once
SITE_SYSTEM = "urn:ipv-sandbox:site"
PM_CODING = {"system": "urn:local:roles", "code": "PM", "display": "Program manager"}
ROLE_MAPPING = {"social_worker": {"codes": [{"system": SNOMED_SW["system"], "code": SNOMED_SW["code"]}]},
                "program_manager": {"texts": ["program manager"]}}
QUEUE_ROLES = ("social_worker", "program_manager")
NO_ENCOUNTER = -1
UNKNOWN_SITE = -2
_run = itertools.count()  # each example names its EHRs afresh: earlier examples' referrals are another EHR's


@dataclass(frozen=True)
class Site:
    index: int
    location_parent: int | None
    organization_parent: int | None

    @property
    def loc(self) -> str:
        return f"loc-{self.index}"

    @property
    def org(self) -> str:
        return f"org-{self.index}"

    def keys(self) -> list[str]:
        """The site keys a rule may name (the referral also carries its ancestors')."""
        return [f"Location/{self.loc}", f"Organization/{self.org}", f"{SITE_SYSTEM}|s{self.index}", f"s{self.index}"]


@dataclass(frozen=True)
class Worker:
    ehr: int
    reference: str
    kind: str  # social_worker | program_manager
    places: tuple[str, ...]  # Location/... and Organization/... on the PractitionerRole (EHR coverage)
    also_clinician: bool  # a second, non-social-work PractitionerRole (gives no coverage)
    iss_choice: int


@dataclass(frozen=True)
class Referral:
    ehr: int
    site: int  # a site index, NO_ENCOUNTER or UNKNOWN_SITE
    iss_choice: int


@dataclass
class World:
    ehrs: list[dict[str, Any]]  # per EHR: {"iss": [...], "pattern": str | None}
    sites: list[Site]
    workers: list[Worker]
    coverage: dict[str, Any]
    teams: list[dict[str, Any]]
    referrals: list[Referral]
    ehrs_block: bool
    run: int = field(default_factory=lambda: next(_run))


def _ancestors(sites: list[Site], index: int, parent_of: str) -> list[Site]:
    """Nearest first, at most three levels (as fhir/context.py walks partOf)."""
    out, here = [], getattr(sites[index], parent_of)
    while here is not None and len(out) < 3:
        out.append(sites[here])
        here = getattr(sites[here], parent_of)
    return out


@st.composite
def worlds(draw: st.DrawFn) -> World:
    n_ehrs = draw(st.integers(1, 3))
    ehrs = []
    for _e in range(n_ehrs):
        pattern = draw(st.booleans())
        n_exact = draw(st.integers(0 if pattern else 1, 2))
        ehrs.append({"n_exact": n_exact, "pattern": pattern})
    single = all(e["n_exact"] == 1 and not e["pattern"] for e in ehrs)
    ehrs_block = draw(st.booleans()) if single else True  # without the block each iss is its own EHR

    n_sites = draw(st.integers(1, 6))
    sites: list[Site] = []
    for i in range(n_sites):
        parent = st.one_of(st.none(), st.integers(0, i - 1)) if i else st.none()
        sites.append(Site(i, draw(parent), draw(parent)))
    all_keys = sorted({k for s in sites for k in s.keys()})
    ehr_places = sorted({k for s in sites for k in s.keys()[:2]})  # what a PractitionerRole can name
    keys = st.lists(st.sampled_from(all_keys), max_size=3, unique=True)

    workers: list[Worker] = []
    for e in range(n_ehrs):
        refs = draw(st.lists(st.integers(0, 4), min_size=1, max_size=3, unique=True))  # shared across EHRs
        for n, r in enumerate(refs):
            kind = "social_worker" if n == 0 else draw(st.sampled_from(QUEUE_ROLES))
            workers.append(Worker(ehr=e, reference=f"Practitioner/sw-{r}", kind=kind,
                                  places=tuple(draw(st.lists(st.sampled_from(ehr_places), max_size=2, unique=True))),
                                  also_clinician=draw(st.booleans()), iss_choice=draw(st.integers(0, 5))))

    # worklist.coverage names no EHR: the users and roles it names are at every EHR of the deployment, and a user
    # it names is someone who works referrals there (a social worker at each EHR: naming a program manager, who
    # reads the queue, is the deployment mistake a team of people nobody at that EHR works would be).
    everywhere = set.intersection(*({w.reference for w in workers if w.ehr == e and w.kind == "social_worker"}
                                    for e in range(n_ehrs)))
    kinds = set.intersection(*({w.kind for w in workers if w.ehr == e} for e in range(n_ehrs)))
    coverage: dict[str, Any] = {}
    if everywhere:
        users = draw(st.dictionaries(st.sampled_from(sorted(everywhere)), keys, max_size=2))
        if users:
            coverage["users"] = users
    roles = draw(st.dictionaries(st.sampled_from(sorted(kinds)), keys, max_size=2))
    if roles:
        coverage["roles"] = roles

    teams = []
    for t in range(draw(st.integers(0, 3))):
        ehr = draw(st.one_of(st.none(), st.integers(0, n_ehrs - 1))) if ehrs_block else None
        staff = [w for w in workers if ehr is None or w.ehr == ehr]
        # Members by reference: people who work referrals at the team's EHR (social workers there).
        present = sorted({w.kind for w in staff} | ({w.reference for w in staff if w.kind == "social_worker"}
                                                    if ehr is not None else set()))
        members = draw(st.lists(st.sampled_from(present), min_size=1, max_size=2, unique=True))
        if members == ["program_manager"]:  # refused at start-up: program managers do not work referrals
            members.append("social_worker")
        if ehr is None:  # every EHR it serves must have one of its member roles
            for e in range(n_ehrs):
                if not any(w.kind in members for w in workers if w.ehr == e):
                    members.append(next(w.kind for w in workers if w.ehr == e))
        fallback = draw(st.booleans())
        team = {"id": f"team-{t}", "name": f"Team {t}", "members": members,
                "sites": [] if fallback else draw(keys)}
        if fallback:
            team["fallback"] = True
        if ehr is not None:
            team["ehr"] = ehr
        teams.append(team)

    referrals = draw(st.lists(st.builds(Referral, ehr=st.integers(0, n_ehrs - 1),
                                        site=st.one_of(st.integers(0, n_sites - 1),
                                                       st.sampled_from((NO_ENCOUNTER, UNKNOWN_SITE))),
                                        iss_choice=st.integers(0, 5)), min_size=1, max_size=5))
    return World(ehrs=ehrs, sites=sites, workers=workers, coverage=coverage, teams=teams, referrals=referrals,
                 ehrs_block=ehrs_block)


# -- the world as the app sees it ------------------------------------------------------------------------------
def _ehr_id(world: World, e: int) -> str:
    return f"r{world.run}-ehr{e}"


def _iss_values(world: World, e: int) -> list[str]:
    """Every iss a launch of EHR ``e`` may come on: its exact values and two per-launch values of its pattern."""
    spec = world.ehrs[e]
    root = f"{BASE}/r{world.run}/e{e}"
    values = [f"{root}/i{k}/fhir" for k in range(spec["n_exact"])]
    if spec["pattern"]:
        values += [f"{root}/v/launch-{k}/fhir" for k in range(2)]
    return values


def _deployment_extra(world: World) -> dict[str, Any]:
    extra: dict[str, Any] = {"roles": ROLE_MAPPING, "worklist": {"coverage": world.coverage} if world.coverage else {},
                             "routing": {"teams": [{**t, "ehr": _ehr_id(world, t["ehr"])} if "ehr" in t else t
                                                   for t in world.teams]}}
    if world.ehrs_block:
        extra["ehrs"] = {}
        for e, spec in enumerate(world.ehrs):
            entry: dict[str, Any] = {"name": f"EHR {e}", "iss": _iss_values(world, e)[:spec["n_exact"]]}
            if spec["pattern"]:
                entry["iss_patterns"] = [f"{BASE}/r{world.run}/e{e}/v/*/fhir"]
            extra["ehrs"][_ehr_id(world, e)] = entry
    return extra


def _pick(values: list[str], choice: int) -> str:
    return values[choice % len(values)]


def _encounter(world: World, site: int, n: int) -> dict[str, Any] | None:
    if site == NO_ENCOUNTER:
        return None
    if site == UNKNOWN_SITE:  # a site no rule names, part of nothing
        loc = {"id": "loc-elsewhere", "name": "Somewhere else", "postalCode": "02114",
               "identifiers": [{"system": SITE_SYSTEM, "value": "elsewhere"}]}
        return {"id": f"enc-{n}", "class": "AMB", "locations": [loc],
                "service_provider": {"id": "org-elsewhere", "name": "Elsewhere", "identifiers": []},
                "parent_locations": [], "parent_organizations": []}
    s = world.sites[site]

    def loc(x: Site) -> dict[str, Any]:
        return {"id": x.loc, "name": f"Site {x.index}", "postalCode": "02115",
                "identifiers": [{"system": SITE_SYSTEM, "value": f"s{x.index}"}]}

    def org(x: Site) -> dict[str, Any]:
        return {"id": x.org, "name": f"Org {x.index}", "identifiers": []}

    return {"id": f"enc-{n}", "class": "AMB", "locations": [loc(s)], "service_provider": org(s),
            "parent_locations": [loc(a) for a in _ancestors(world.sites, site, "location_parent")],
            "parent_organizations": [org(a) for a in _ancestors(world.sites, site, "organization_parent")]}


def _refer(app, world: World, n: int, referral: Referral) -> str:
    """A referral through the consent page, from a clinician's launch on one of the EHR's iss values."""
    ctx = default_context()
    ctx["patient"] = {**ctx["patient"], "id": f"pat-{world.run}-{n}", "mrn": f"MRN-{world.run}-{n}"}
    ctx["encounter"] = _encounter(world, referral.site, n)
    ctx["user"] = {"reference": "Practitioner/doc", "name": "Dr. Avery Testdoctor", "roles": ["clinician"]}
    data = {"screening": dict(SCREENING),
            "referral": {"site": None, "results": [{"service_id": "svc", "program": "A program",
                                                    "phone": "1-617-000-0000"}],
                         "selected": ["svc"], "safe_contact": {"channel": "phone", "note": None}}}
    client = app.test_client()
    lid = launch_for(app, client, ctx, data, iss=_pick(_iss_values(world, referral.ehr), referral.iss_choice))
    assert consent(client, lid, channel="phone", resources=["ServiceRequest", "Task"]).status_code == 302
    with app.app_context(), session_scope(app) as db:
        return db.scalar(select(ReferralRecord.id).where(ReferralRecord.launch_id == lid))


def _queue(app, world: World, worker: Worker) -> set[str]:
    """The referrals this worker's queue lists (every status, one page holds them all)."""
    coding = SNOMED_SW if worker.kind == "social_worker" else PM_CODING
    roles = [role([coding], locations=[p for p in worker.places if p.startswith("Location/")],
                  organizations=[p for p in worker.places if p.startswith("Organization/")])]
    if worker.also_clinician:
        roles.append(role([{"system": "http://snomed.info/sct", "code": "309343006", "display": "Physician"}],
                          organizations=["Organization/org-elsewhere"]))
    client = app.test_client()
    lid = launch_for(app, client, worker_context(worker.reference, "S W", roles),
                     iss=_pick(_iss_values(world, worker.ehr), worker.iss_choice), kind="standalone")
    resp = client.get(f"/l/{lid}/worklist?status=all")
    assert resp.status_code == 200, resp.status_code
    return set(re.findall(r'data-testid="referral-([^"]+)"', resp.get_data(as_text=True)))


@pytest.fixture(scope="module")
def routing_app(tmp_path_factory):
    app = create_app(app_config(f"sqlite:///{tmp_path_factory.mktemp('routing') / 'app.db'}"))
    app.extensions["base_settings"] = settings_of(app)
    yield app
    app.extensions["db_engine"].dispose()


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(world=worlds())
def test_every_referral_reaches_a_social_worker_of_its_ehr_and_no_one_of_another(routing_app, world):
    app = routing_app
    init_app(app, app.extensions["base_settings"].replace(**_deployment_extra(world)))
    made = {_refer(app, world, n, r): r for n, r in enumerate(world.referrals)}
    seen = {i: _queue(app, world, w) for i, w in enumerate(world.workers)}
    for rid, referral in made.items():
        # Seen by someone who works it: a social worker (program managers read the queue and change nothing).
        own = [w.reference for i, w in enumerate(world.workers)
               if w.ehr == referral.ehr and w.kind == "social_worker" and rid in seen[i]]
        others = [(w.ehr, w.reference) for i, w in enumerate(world.workers)
                  if w.ehr != referral.ehr and rid in seen[i]]
        assert own, f"referral {referral} is in no queue of its EHR"
        assert not others, f"referral {referral} is in another EHR's queue: {others}"
