"""When is a check-in due? The deployment's policy applied to a Patient and its earlier screens.

Policy (deployment file, ``cds:``; defaults below):
- ``interval_months`` (12): a screen by this app inside the interval means no card.
- ``population``: ``uspstf`` (default) = the USPSTF 2018 recommendation's population, "women of
  reproductive age" (USPSTF, Intimate Partner Violence, Elder Abuse, and Abuse of Vulnerable Adults:
  Screening, JAMA 2018;320(16):1678-1687). The USPSTF gives no numeric range; we use 18-44 by default
  (CDC/NCHS report "reproductive age" as 15-44; our instruments are validated in adults, hence 18) and
  ``genders: [female]`` (Patient.gender). ``all-adults`` = any gender, ``min_age`` up. Both ages and
  genders can be set.
- Unknown is not "recent": when the screens cannot be read (no prefetch, no Observation scope, 403)
  a check-in counts as due, and a card is shown (the card says nothing about the patient). The same
  for an unknown gender or birth date.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from config.deployment import Cds
from fhir.cds_hooks import age_on, is_screen, observation_when


@dataclass(frozen=True)
class CheckinPolicy:
    interval_months: int = 12
    population: str = "uspstf"
    genders: tuple[str, ...] = ("female",)
    min_age: int | None = 18
    max_age: int | None = 44

    @classmethod
    def from_settings(cls, cds: Cds | None) -> CheckinPolicy:
        """The deployment's ``cds:`` block (population USPSTF 2018 by default; what it sets replaces the
        population's own ages and genders)."""
        if cds is None:
            return cls()
        pop = cds.population
        base = cls() if pop.name == "uspstf" else cls(population=pop.name, genders=(), min_age=18, max_age=None)
        given = pop.model_fields_set
        return cls(interval_months=cds.interval_months, population=pop.name,
                   genders=tuple(pop.genders or ()) if "genders" in given else base.genders,
                   min_age=pop.min_age if "min_age" in given else base.min_age,
                   max_age=pop.max_age if "max_age" in given else base.max_age)

    def since(self, now: datetime) -> datetime:
        """Start of the interval (same day, ``interval_months`` earlier)."""
        month = now.month - self.interval_months
        year = now.year + (month - 1) // 12
        month = (month - 1) % 12 + 1
        day = min(now.day, 28)
        return now.replace(year=year, month=month, day=day)


@dataclass(frozen=True)
class Decision:
    due: bool
    reason: str  # recent | outside-population | due | unknown-screens


def decide(policy: CheckinPolicy, patient: dict[str, Any] | None, screens: list[dict[str, Any]] | None,
           codes: set[tuple[str, str]], now: datetime | None = None) -> Decision:
    now = now or datetime.now(UTC)
    if patient:
        gender = patient.get("gender")
        if policy.genders and gender and gender not in policy.genders:
            return Decision(False, "outside-population")
        age = age_on(patient.get("birthDate"), date(now.year, now.month, now.day))
        if age is not None and ((policy.min_age is not None and age < policy.min_age)
                                or (policy.max_age is not None and age > policy.max_age)):
            return Decision(False, "outside-population")
    if screens is None:
        return Decision(True, "unknown-screens")
    since = policy.since(now)
    for obs in screens:
        when = observation_when(obs)
        if is_screen(obs, codes) and when is not None and since <= when <= now + timedelta(days=1):
            return Decision(False, "recent")
    return Decision(True, "due")
