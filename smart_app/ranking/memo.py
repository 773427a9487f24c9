"""The referral ranking for one launch, kept for the minute, and what it needs from the deployment: the urgent
box and the referral page both rank, and must agree."""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import current_app

from config.current import current_settings
from referrals.hours import minute_of_week
from referrals.ranking import Ranking, RankingQuery, rank
from referrals.store import store_for


def clock() -> datetime:
    """Now (UTC). Tests set ``app.extensions["clock"]`` to a function to pin the hour; nothing else does."""
    fixed = current_app.extensions.get("clock")
    return fixed() if fixed else datetime.now(UTC)


def default_programs() -> list[str]:
    """The deployment's programs for a launch that does not say where the visit is."""
    return list(current_settings().default_programs)


RANKINGS_KEPT = 512
_rankings_lock = threading.Lock()


def ranked(launch_id: str, context: dict[str, Any], *, safe_zip: str | None = None,
           needs: list[str] | tuple[str, ...] = (), language: str = "en", now: datetime | None = None,
           limit: int = 10, site_map: dict[str, str] | None = None,
           default_programs: list[str] | tuple[str, ...] = ()) -> Ranking:
    """``rank`` for one launch, kept for the minute: a page's reload and the urgent box beside the referral
    list ask again with the same inputs. The key is the launch id and every input ``rank`` reads (the launch
    context's digest, ZIP, needs, language, limit, site map, default programs, the directory index, and the
    clock only as ``rank`` sees it: the minute of the week and the date in the directory's time zone), so
    no launch is ever given another's ranking and a new minute ranks again. Bounded, in-process."""
    index = store_for(current_app).index
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    inputs = json.dumps([context, safe_zip, list(needs), language, limit, site_map, list(default_programs),
                         minute_of_week(now, index.timezone),
                         now.astimezone(ZoneInfo(index.timezone)).date().isoformat()],
                        sort_keys=True, default=str)
    key = (launch_id, id(index), hashlib.sha256(inputs.encode()).digest())
    memo: OrderedDict[tuple[str, int, bytes], tuple[Any, Ranking]] = current_app.extensions.setdefault(
        "ipv_rankings", OrderedDict())
    with _rankings_lock:
        hit = memo.get(key)
        if hit is not None and hit[0] is index:
            memo.move_to_end(key)
            return hit[1]
    ranking = rank(index, RankingQuery.for_launch(context, safe_zip=safe_zip, needs=needs, language=language, now=now,
                                                  limit=limit, site_map=site_map, default_programs=default_programs))
    with _rankings_lock:
        memo[key] = (index, ranking)
        while len(memo) > RANKINGS_KEPT:
            memo.popitem(last=False)
    return ranking
