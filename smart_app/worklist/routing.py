"""Every referral gets a route when it is made, so it always reaches someone.

The route is, in order: the deployment team whose sites cover one of the referral's site keys (``coverage``), a
site the deployment's coverage gives a user or the social workers (also ``coverage``, no team), the EHR's fallback
team (``fallback``), else the EHR's unrouted queue (``unrouted``), which every social worker and program manager
of that EHR sees at the top of their queue. The deployment file::

    routing:
      teams:
        - id: passageway-bwh
          name: "Passageway's social work team at BWH"   # what the clinician is told
          ehr: bwh              # an id in ehrs; without it the team serves every EHR of the deployment
          sites: ["Location/loc-bwh", "urn:ipv-sandbox:site|bwh"]   # keys as in referral_site
          members: [social_worker, "Practitioner/abc"]   # roles or users who work this team's referrals
                                # (program managers alone: refused at start-up, they only read)
          program: passageway   # optional directory service id: its hours and holidays count the due time
        - id: on-call
          name: "the social-work team on call"
          fallback: true
          members: [social_worker]    # a fallback team's default: every social worker and program manager

Route kinds and team ids are not PHI: they are plaintext columns the queue filters on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from config.current import settings_of
from config.deployment import Site
from config.ehrs import ehrs_of
from smart_app.launch.roles import PROGRAM_MANAGER, QUEUE_ROLES, SOCIAL_WORKER, mapping_for

COVERAGE, FALLBACK, UNROUTED = "coverage", "fallback", "unrouted"
ROUTE_KINDS = (COVERAGE, FALLBACK, UNROUTED)


class RoutingConfigError(ValueError):
    """The deployment's ``routing`` block routes referrals nobody works (the message names the team)."""


@dataclass(frozen=True)
class Team:
    id: str
    name: str
    ehr: str | None  # None: every EHR of the deployment
    sites: frozenset[str] = frozenset()
    members: frozenset[str] = frozenset()
    fallback: bool = False
    program: str | None = None  # directory service whose hours count this team's due times (worklist/due.py)

    def serves(self, ehr: str) -> bool:
        return self.ehr is None or self.ehr == ehr


@dataclass(frozen=True)
class Route:
    ehr: str
    kind: str
    team: Team | None = None

    @property
    def team_id(self) -> str | None:
        return self.team.id if self.team else None


@dataclass(frozen=True)
class Routing:
    teams: tuple[Team, ...] = ()
    coverage_keys: frozenset[str] = field(default_factory=frozenset)

    def route(self, ehr: str, site_keys: list[str]) -> Route:
        keys = set(site_keys)
        for team in self.teams:
            if team.serves(ehr) and not team.fallback and team.sites & keys:
                return Route(ehr, COVERAGE, team)
        if self.coverage_keys & keys:
            return Route(ehr, COVERAGE)
        for team in self.teams:
            if team.serves(ehr) and team.fallback:
                return Route(ehr, FALLBACK, team)
        return Route(ehr, UNROUTED)

    def teams_of(self, ehr: str, user_reference: str | None, roles: list[str], keys: frozenset[str]) -> set[str]:
        """The teams whose routed referrals this user works: named as a member (by reference or role), or
        covering one of the user's sites."""
        names = set(roles) | ({user_reference} if user_reference else set())
        return {t.id for t in self.teams if t.serves(ehr) and (t.members & names or t.sites & keys)}


def routing_of(deployment: Site) -> Routing:
    """The deployment's ``routing`` block (its shape validated by the settings model: ids, names, known ``ehr``)."""
    teams = []
    for i, entry in enumerate(deployment.routing.teams):
        members = frozenset(entry.members)
        if entry.fallback and not members:
            members = frozenset(QUEUE_ROLES)  # a fallback team nobody works would be no route at all
        if members and members <= {PROGRAM_MANAGER}:
            # Program managers read the queue and change nothing: a team of them alone routes referrals nobody works.
            raise RoutingConfigError(f"routing.teams[{i}] ({entry.id}): members are only program managers, who do not "
                                     f"work referrals; add {SOCIAL_WORKER} or the users who do")
        teams.append(Team(id=entry.id, name=entry.name, ehr=entry.ehr or None, sites=frozenset(entry.sites),
                          members=members, fallback=entry.fallback, program=entry.program))
    return Routing(teams=tuple(teams), coverage_keys=_coverage_keys(deployment))


def _coverage_keys(deployment: Site) -> frozenset[str]:
    """The site keys the deployment's ``worklist.coverage`` gives someone who works referrals: every user's list
    and the social workers' list. The program managers' list lets them see those sites, and routes nothing: they
    read the queue and change nothing, so a referral only they saw would wait for no one."""
    coverage = deployment.worklist.coverage
    lists = [*coverage.users.values(), coverage.roles.get(SOCIAL_WORKER)]
    return frozenset(str(k) for ks in lists for k in ks or [])


def team_named(deployment: Site, team_id: str | None) -> Team | None:
    return next((t for t in routing_of(deployment).teams if t.id == team_id), None) if team_id else None


def check_deployment(deployment: Site) -> None:
    """Start-up: the deployment's ``ehrs``, ``roles`` and ``routing`` blocks make sense beyond their shape (which
    the settings model checked): config/ehrs.py's patterns, the role mapping, the teams, so a mistake in them
    stops the app naming the entry instead of failing every launch or referral. Raises EhrIdentityError,
    RoleMappingError or RoutingConfigError."""
    ehrs_of(deployment)
    mapping_for(deployment)
    routing_of(deployment)


def init_app(app: Any) -> None:
    check_deployment(settings_of(app))
