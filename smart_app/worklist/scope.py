"""Which referrals a social worker may see and act on: those of their EHR and of the sites or teams they cover,
and every unrouted referral of their EHR.

Coverage comes from the EHR: the places on the user's social-work PractitionerRoles
(``location``, ``organization``, and the location/providedBy of its ``healthcareService``; FHIR R4
PractitionerRole, https://hl7.org/fhir/R4/practitionerrole.html), and from the deployment file::

    worklist:
      coverage:
        users: {"Practitioner/abc": ["urn:ipv-sandbox:site|bwh", "Location/loc-bwh"]}
        roles: {social_worker: ["Organization/org-mgh"], program_manager: [...]}

The EHR's places, the user's own list and their roles' lists add up: a site the deployment file covers is a routed
referral (smart_app/worklist/routing.py), so everyone it names sees it, whatever else they cover. With none, they
see only their EHR's unrouted referrals. A referral's site keys (``referral_site``) are every name the EHR gave the
encounter's site at referral time: ``Location/<id>``, ``Organization/<id>`` (serviceProvider), their identifiers as
``system|value``, and the directory site id the referral page matched. A referral is in scope when its EHR identity
is the launch's (config/ehrs.py) and one of its keys is covered, or its route's team is one the
user works (smart_app/worklist/routing.py), or it is unrouted: the unrouted queue is every social worker's and
program manager's of that EHR. Referrals made before routing (no ``ehr`` column) match on the launch's ``iss``.
Every worklist view goes through ``scoped_referral`` or ``scoped_query``: outside the scope a referral does not
exist (404).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, false, or_, select
from sqlalchemy.orm import Session

from config.deployment import Site
from config.ehrs import ehr_for, ehr_id_for
from smart_app.launch.roles import PROGRAM_MANAGER, SOCIAL_WORKER, queue_practitioner_roles, user_roles
from smart_app.launch.sites import referral_site_keys as referral_site_keys
from smart_app.launch.sites import site_display_name as site_display_name
from smart_app.store.crypto import encrypt_json, keyed_hash
from smart_app.store.models import ReferralProgram, ReferralRecord, ReferralSite, SiteKeyset
from smart_app.worklist.routing import UNROUTED, routing_of


@dataclass
class Scope:
    iss: str
    user_reference: str | None
    roles: list[str]
    keys: frozenset[str]
    source: str  # ehr | deployment-user | deployment-role | none
    places: list[str] = field(default_factory=list)
    ehr: str = ""  # the EHR identity; "" = the iss itself
    teams: frozenset[str] = frozenset()  # routing teams whose referrals this user works
    # The EHR's exact iss values (config/ehrs.py): a referral made before routing, kept by its iss, is of this EHR
    # whichever of them it was made on (a standalone launch on a per-launch iss finds the EHR launch's).
    ehr_iss: frozenset[str] = frozenset()

    @property
    def ehr_id(self) -> str:
        return self.ehr or self.iss

    @property
    def can_act(self) -> bool:
        """Status changes and contact attempts: social workers. Program managers read and export."""
        return SOCIAL_WORKER in self.roles

    @property
    def is_queue_user(self) -> bool:
        return SOCIAL_WORKER in self.roles or PROGRAM_MANAGER in self.roles


def _ehr_coverage(user: dict[str, Any], deployment: Site) -> tuple[set[str], list[str]]:
    keys: set[str] = set()
    places: list[str] = []
    # Only the social-work roles: a physician role at another hospital gives no social-work coverage.
    for role in queue_practitioner_roles(user, deployment):
        for kind in ("locations", "organizations"):
            for ref in role.get(kind) or []:
                keys.add(ref["reference"])
                name = ref.get("display") or ref["reference"]
                if name not in places:
                    places.append(name)
    return keys, places


def _deployment_coverage(reference: str | None, roles: list[str], deployment: Site) -> tuple[set[str], str]:
    """The deployment file's coverage of this user: their own list and their roles' lists, added together."""
    coverage = deployment.worklist.coverage
    own = {str(k) for k in coverage.users.get(reference) or []} if reference else set()
    by_role = {str(k) for role in roles for k in coverage.roles.get(role) or []}
    return own | by_role, "deployment-user" if own else "deployment-role" if by_role else "none"


def scope_for(launch: Any, deployment: Site) -> Scope:
    user = (launch.context or {}).get("user") or {}
    roles = user_roles(user, deployment)
    ref = user.get("reference")
    ehr_keys, places = _ehr_coverage(user, deployment)
    # Every coverage the deployment names adds to what the EHR says: routing counts a site the deployment file
    # covers as routed (smart_app/worklist/routing.py), so the user it names must see it whatever else they cover.
    listed, source = _deployment_coverage(ref, roles, deployment)
    keys = ehr_keys | listed
    if ehr_keys:
        source = "ehr"
    places = [*places, *sorted(listed - ehr_keys)]
    identity = ehr_for(launch.iss, deployment)
    ehr = identity.id if identity is not None else ehr_id_for(launch.iss, deployment)
    teams = routing_of(deployment).teams_of(ehr, ref, roles, frozenset(keys))
    return Scope(iss=launch.iss.rstrip("/"), user_reference=ref, roles=roles, keys=frozenset(keys),
                 source=source, places=places, ehr=ehr, teams=frozenset(teams),
                 ehr_iss=identity.iss if identity is not None else frozenset())


def add_site_keys(db: Session, referral_id: str, keys: list[str]) -> None:
    for key in keys:
        db.add(ReferralSite(referral_id=referral_id, key=key))


# -- programs (the queue's program filter, counts and sort; ReferralProgram) ----------------------------------
NO_PROGRAM = "NONE"  # the row of a referral that names no program: indexed, nothing to list


def program_key(program: dict[str, Any]) -> str:
    """Keyed HMAC of a program's (id, name): equal programs share it, and it names neither without the key."""
    return keyed_hash("program|" + json.dumps([program.get("id"), program.get("name")]))


def program_rows(referral_id: str, programs: list[dict[str, Any]]) -> list[ReferralProgram]:
    """The index rows of a referral's programs (the summary's ``programs``: id and name; phones stay there)."""
    rows: dict[str, ReferralProgram] = {}
    for p in programs or []:
        if not isinstance(p, dict) or not (p.get("id") or p.get("name")):
            continue
        program = {"id": p.get("id"), "name": p.get("name")}
        key = program_key(program)
        rows.setdefault(key, ReferralProgram(referral_id=referral_id, key=key, program_enc=encrypt_json(program)))
    return list(rows.values()) or [ReferralProgram(referral_id=referral_id, key=NO_PROGRAM, program_enc=None)]


def program_keys_of(keys: Any) -> str:
    """``referral.program_keys``: a referral's program keys, sorted, joined by commas ("" when it names none), so
    the queue counts referrals per program set from the referral row alone."""
    return ",".join(sorted({k for k in keys if k and k != NO_PROGRAM}))


def of_ehr(scope: Scope) -> ColumnElement[bool]:
    """Referrals of the user's EHR identity: keyed on it, or made on the launch's iss or one of the EHR's exact iss
    values whatever they are keyed on — one made before routing (no ``ehr``), or before the deployment tied its iss
    to this EHR (keyed on the raw iss, or on an EHR id the deployment has since renamed). Under the deployment as
    it stands an exact iss belongs to this EHR alone, so nothing of another EHR comes in this way; referrals keyed
    on a per-launch iss are re-keyed by ``smart_app.worklist.backfill.rekey_ehrs``."""
    values = sorted({scope.iss, *scope.ehr_iss})
    return or_(ReferralRecord.ehr == scope.ehr_id, ReferralRecord.iss.in_(values + [v + "/" for v in values]))


def keysets_of(db: Session, scope: Scope) -> list[str]:
    """The site key sets (``referral.site_keyset``, PostgreSQL) holding one of the keys this user covers."""
    if not scope.keys:
        return []
    return sorted(db.scalars(select(SiteKeyset.keyset).where(SiteKeyset.key.in_(sorted(scope.keys))).distinct()))


def scoped_query(scope: Scope, *, per_row: bool = False,
                 keysets: list[str] | None = None) -> Select[tuple[ReferralRecord]]:
    """Referrals in scope: of the user's EHR, and covered, or routed to one of the user's teams, or unrouted.

    The site test is an uncorrelated IN (every referral id at the covered sites, hashed once per statement): a
    correlated EXISTS under the OR is costed by PostgreSQL as one index probe per row, tens of times its real cost
    over the whole queue, enough to switch on JIT compilation. ``per_row``: the correlated EXISTS, one probe of
    ix_referral_site_key_referral per referral, for a condition read on a few referrals only (the overdue banner's
    "in your queue"), where hashing every referral id at the covered sites would cost more. ``keysets``: the
    covered key sets (``keysets_of``; PostgreSQL, where a trigger keeps ``referral.site_keyset``): the site test is
    then on the referral row itself, so an index walk of the referrals tests each one as it goes."""
    q = select(ReferralRecord)
    if not scope.is_queue_user:
        return q.where(false())
    reach = [ReferralRecord.route_kind == UNROUTED]
    if keysets is not None:
        if keysets:
            reach.append(ReferralRecord.site_keyset.in_(keysets))
    elif scope.keys and per_row:
        reach.append(exists().where(ReferralSite.referral_id == ReferralRecord.id,
                                    ReferralSite.key.in_(sorted(scope.keys))))
    elif scope.keys:
        reach.append(ReferralRecord.id.in_(select(ReferralSite.referral_id)
                                           .where(ReferralSite.key.in_(sorted(scope.keys)))))
    if scope.teams:
        reach.append(ReferralRecord.route_team.in_(sorted(scope.teams)))
    return q.where(of_ehr(scope), or_(*reach))


def unrouted_untaken() -> ColumnElement[bool]:
    """Unrouted and taken by nobody yet: nobody is named for it. Pinned at the top of every queue of its EHR and
    counted by its banner, /readyz and the gauge (smart_app/worklist/alerts.py) until someone takes it."""
    return and_(ReferralRecord.route_kind == UNROUTED, ReferralRecord.assignee.is_(None))


def unrouted_query(scope: Scope) -> Select[tuple[ReferralRecord]]:
    """The EHR's unrouted referrals: at the top of every social worker's and program manager's queue."""
    return select(ReferralRecord).where(of_ehr(scope), ReferralRecord.route_kind == UNROUTED)


def scoped_referral(db: Session, scope: Scope, rid: str) -> ReferralRecord | None:
    if not rid or len(rid) > 64:
        return None
    return db.scalar(scoped_query(scope).where(ReferralRecord.id == rid))
