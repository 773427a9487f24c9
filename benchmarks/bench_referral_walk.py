"""The 21-referral walk: does every consented referral reach a social worker's queue?

Against the sandbox EHR on a live port (sandbox_ehr/harness/vendor.py: the generic personality, the app configured
by config/deployments/sandbox.yaml as the demo is), a clinician makes 21 referrals through the real pages (EHR
launch, private gate, a positive screen, the program list, consent) at the nine sites of the seed data: the
Passageway sites (BWH with its department clinics, BW Faulkner, Southern Jamaica Plain, Brookside, Whittier
Street), the HAVEN sites (MGH, MGH Chelsea, MGH Revere) and Baystate, outside both; most of them no routing team
or coverage names. One launch has no encounter. Four of the visits are added to the sandbox's chart for the
walk (a second visit at a site), so every referral is its own visit.

Then each social worker and the program manager of the seed data signs in through a standalone launch and reads
their queue page, once on the sandbox's iss and once as an independent launcher does it, under an iss of that
launch's own (the sandbox's per-launch iss, tied to the EHR by the deployment's ``iss_patterns``). Printed: each
referral's site, its route and what the confirmation page told the clinician; per worker, how many referrals their
queue lists (and the unrouted count it shows first); how many referrals are unrouted, and how many are in no queue
at all. Target (printed as pass/miss, never asserted): 0 in no queue.

    python -m benchmarks.bench_referral_walk
"""

from __future__ import annotations

import argparse
import html
import logging
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import requests
from sqlalchemy import select

from sandbox_ehr.harness.vendor import Journey, VendorEnv, start
from sandbox_ehr.store import get_store
from smart_app.store.db import session_scope
from smart_app.store.models import ReferralRecord

# (site, patient, encounter); encounter None: a launch with no encounter. Encounters named enc-walk-* are the
# extra visits this walk adds to the chart (EXTRA_VISITS).
WALK = [
    ("BWH", "pat-alice", "enc-alice-bwh"),
    ("BWH", "pat-june", "enc-june-bwh"),
    ("BWH", "pat-lucia", "enc-lucia-bwh"),
    ("BWH (Emergency Department)", "pat-nora", "enc-nora-bwh-ed"),
    ("BWH (Primary Care Clinic)", "pat-omar", "enc-omar-bwh-primary-care"),
    ("BWH (ED Observation Unit)", "pat-priya", "enc-priya-bwh-ed-obs"),
    ("BW Faulkner", "pat-dana", "enc-dana-faulkner"),
    ("Southern Jamaica Plain HC", "pat-carmen", "enc-carmen-sjphc"),
    ("Southern Jamaica Plain HC", "pat-river", "enc-river-sjphc"),
    ("Brookside HC", "pat-ellen", "enc-ellen-brookside"),
    ("Brookside HC", "pat-ellen", "enc-walk-ellen-brookside"),
    ("Whittier Street HC", "pat-fatima", "enc-fatima-whittier"),
    ("Whittier Street HC", "pat-fatima", "enc-walk-fatima-whittier"),
    ("MGH", "pat-grace", "enc-grace-mgh"),
    ("MGH (serviceProvider only)", "pat-marcus", "enc-marcus-mgh"),
    ("MGH Chelsea", "pat-joana", "enc-joana-chelsea"),
    ("MGH Chelsea", "pat-joana", "enc-walk-joana-chelsea"),
    ("MGH Revere", "pat-marisol", "enc-marisol-revere"),
    ("MGH Revere", "pat-marisol", "enc-walk-marisol-revere"),
    ("Baystate (outside both networks)", "pat-hana", "enc-hana-baystate"),
    ("no encounter", "pat-kim", None),
]
EXTRA_VISITS = {"enc-walk-ellen-brookside": "enc-ellen-brookside", "enc-walk-fatima-whittier": "enc-fatima-whittier",
                "enc-walk-joana-chelsea": "enc-joana-chelsea", "enc-walk-marisol-revere": "enc-marisol-revere"}
# The seed data's social-work users (sandbox_ehr/README.md): what their PractitionerRoles say.
WORKERS = {"prac-devon": "social worker, BWH and Faulkner", "prac-emery": "social worker, MGH and its centers",
           "prac-harper": "social worker, BWH hospital-wide", "prac-jules": "social worker, BWH ED only",
           "prac-kendall": "program manager, BWH"}
TARGET_IN_NO_QUEUE = 0


def add_visits(env: VendorEnv) -> None:
    """A second visit at four sites: a copy of the patient's seed encounter under a new id, as the EHR files it."""
    with env.sandbox.app_context():
        store = get_store(env.sandbox)
        for new, like in EXTRA_VISITS.items():
            if store.exists("Encounter", new):
                continue
            visit = {k: v for k, v in store.read("Encounter", like).items() if k not in ("id", "meta")}
            visit["identifier"] = [{"system": "urn:ipv-sandbox:encounter", "value": new.removeprefix("enc-")}]
            store.create(visit, assign_id=new)


def refer(env: VendorEnv, patient: str, encounter: str | None) -> tuple[str, str]:
    """One referral through the clinician's pages; returns its id and what the confirmation tells the clinician."""
    journey = Journey(env)
    journey.launch(patient, encounter)
    journey.screen_positive()
    journey.choose_program()
    form = journey.choices(channel="phone")
    digest = journey.preview(form)["digest"]
    resp = journey.post("/consent", {**form, "consent": "yes", "digest": digest})
    if resp.status_code != 302:
        raise RuntimeError(f"consent answered {resp.status_code}, not a redirect")
    page = journey.client.get(f"/l/{journey.lid}/consent/done").get_data(as_text=True)
    told = re.search(r'data-testid="social-work-next">([^<]*)<', page)
    rid = journey.referral_id()
    if rid is None:
        raise RuntimeError("no referral was stored for the launch")
    words = " ".join(html.unescape(told.group(1)).split()) if told else "(no social-work line on the page)"
    return rid, words.split(": ", 1)[-1]  # without the line's label ("What social work does next")


def launcher_iss(env: VendorEnv) -> str:
    """What the sandbox's standalone launcher hands the app (with per-launch iss on: an iss of this launch's own)."""
    resp = requests.post(env.server.url + "/ehr/standalone", allow_redirects=False, timeout=10)
    match = re.search(r"[?&]iss=([^&]+)", resp.headers.get("Location", ""))
    if resp.status_code != 303 or not match:
        raise RuntimeError(f"the standalone launcher answered {resp.status_code}")
    return unquote(match.group(1))


def sign_in(env: VendorEnv, practitioner: str, iss: str) -> tuple[Any, str]:
    """A standalone launch as ``practitioner`` on ``iss``: the app's /launch/standalone, the sandbox's sign-in
    page, the callback. Returns the app's test client and the page the launch lands on."""
    client = env.app.test_client()
    start_ = client.get(f"/launch/standalone?iss={quote(iss)}")
    if start_.status_code != 302:
        raise RuntimeError(f"standalone launch answered {start_.status_code}")
    page = requests.get(start_.headers["Location"], allow_redirects=False, timeout=10)
    action = re.search(r'method="post" action="([^"]+)"', page.text)
    pending = re.search(r'name="pending" value="([^"]+)"', page.text)
    if not (action and pending):
        raise RuntimeError("the sandbox's sign-in page has no form")
    target = action.group(1) if action.group(1).startswith("http") else env.server.url + action.group(1)
    target = html.unescape(target)
    signed = requests.post(target, data={"pending": pending.group(1), "practitioner": practitioner,
                                         "action": "approve"}, allow_redirects=False, timeout=10)
    back = signed.headers.get("Location", "")
    if signed.status_code not in (302, 303) or "error=" in back:
        raise RuntimeError(f"sign-in answered {signed.status_code} {back[:120]}")
    done = client.get("/callback?" + back.split("?", 1)[1])
    return client, done.headers.get("Location", "")


def queue_of(env: VendorEnv, practitioner: str) -> tuple[set[str], int | None, str]:
    """The referrals this user's queue page lists (every status), the unrouted count it shows, where they landed,
    through the launcher's iss (the plain one, or one of its own per launch)."""
    client, landed = sign_in(env, practitioner, launcher_iss(env))
    match = re.search(r"/l/([^/]+)/", landed)
    if not match:
        raise RuntimeError(f"{practitioner}'s launch landed on {landed or 'nothing'}")
    resp = client.get(f"/l/{match.group(1)}/worklist?status=all")
    page = resp.get_data(as_text=True)
    if resp.status_code != 200:
        return set(), None, f"queue answered {resp.status_code}"
    unrouted = re.search(r'data-testid="unrouted-banner" data-count="(\d+)"', page)
    return (set(re.findall(r'data-testid="referral-([^"]+)"', page)), int(unrouted.group(1)) if unrouted else 0,
            landed.split("?")[0].rsplit("/", 1)[-1] or "/")


def routes(env: VendorEnv, ids: list[str]) -> dict[str, tuple[str, str | None]]:
    with env.app.app_context(), session_scope(env.app) as db:
        rows = db.execute(select(ReferralRecord.id, ReferralRecord.route_kind, ReferralRecord.route_team)
                          .where(ReferralRecord.id.in_(ids))).all()
    return {r.id: (r.route_kind, r.route_team) for r in rows}


def run(tmp: Path) -> dict[str, Any]:
    env = start("generic", tmp)
    try:
        add_visits(env)
        made = [(site, *refer(env, patient, encounter)) for site, patient, encounter in WALK]
        ids = [rid for _site, rid, _told in made]
        route = routes(env, ids)
        print(f"{'#':>2}  {'site':<34}{'route':<30}the confirmation page says", flush=True)
        for i, (site, rid, told) in enumerate(made, 1):
            kind, team = route.get(rid, ("?", None))
            print(f"{i:>2}  {site:<34}{kind + (f' ({team})' if team else ''):<30}{told[:100]}", flush=True)
        seen: dict[str, set[str]] = {}
        print(f"\n{'worker':<14}{'who':<38}{'lands on':<10}{'sees':>5}{'of':>4}{'unrouted shown':>16}"
              f"{'sees, per-launch iss':>22}")
        for practitioner, who in WORKERS.items():
            env.sandbox.config["SANDBOX_PER_LAUNCH_ISS"] = False
            listed, unrouted, landed = queue_of(env, practitioner)
            seen[practitioner] = listed & set(ids)
            # An independent launcher's way: every standalone launch under an iss of its own (config/ehrs.py
            # ties them to the EHR by the deployment's iss_patterns).
            env.sandbox.config["SANDBOX_PER_LAUNCH_ISS"] = True
            per_launch, _unrouted, _landed = queue_of(env, practitioner)
            print(f"{practitioner:<14}{who:<38}{landed:<10}{len(seen[practitioner]):>5}{len(ids):>4}"
                  f"{unrouted if unrouted is not None else '-':>16}{len(per_launch & set(ids)):>22}", flush=True)
        in_a_queue = set().union(*seen.values())
        nowhere = [(site, rid) for site, rid, _told in made if rid not in in_a_queue]
        kinds = Counter(route.get(rid, ("?", None))[0] for rid in ids)
        return {"made": len(made), "kinds": kinds, "nowhere": nowhere}
    finally:
        env.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    for name in ("werkzeug", "ipv", "ipv.crypto", "smart_app", "alembic", "sandbox_ehr", "urllib3"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory() as d:
        result = run(Path(d))
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(result["kinds"].items()))
    print(f"\n{result['made']} referrals: {kinds}; in no queue: {len(result['nowhere'])}"
          + "".join(f"\n  in no queue: {site} ({rid})" for site, rid in result["nowhere"]))
    print(f"target: in no queue = {TARGET_IN_NO_QUEUE}: "
          f"{'pass' if len(result['nowhere']) <= TARGET_IN_NO_QUEUE else 'miss'}", flush=True)


if __name__ == "__main__":
    main()
