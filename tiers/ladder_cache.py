"""The published rule versions and their loaded ladders, kept in Django's cache.

A page that reads the ladder from here runs no query for it while the cache
contains it. Every key contains a generation token, and ``forget_ladders()``
replaces that token, so the next read loads everything again. Publishing a
version calls it (tiers.publishing.publish). A published version never changes
afterwards, and the cached list of published versions includes scheduled ones,
so a version that takes effect later applies at its moment without a reset.

The token is random rather than a counter. A cache that loses the token key
(eviction, a cleared file cache) then starts a fresh generation and can never
reuse a key that still contains an older ladder.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid

from django.core.cache import cache
from django.utils import timezone

from tiers.ladder import Ladder, LadderError
from tiers.models import RuleVersion

logger = logging.getLogger(__name__)

GENERATION_KEY = "tiers:ladder:generation"
# Tier names, colours and ranks and the activity kind catalogue are edited
# outside publishing and do not replace the generation, so cached ladders
# expire after this many seconds to show such edits.
LADDER_CACHE_SECONDS = 300


def forget_ladders() -> None:
    """Start a new cache generation, so the next read loads the rules again."""
    cache.set(GENERATION_KEY, uuid.uuid4().hex, timeout=None)


def _generation() -> str:
    generation = cache.get(GENERATION_KEY)
    if generation is None:
        # add() keeps a token that another process set in the meantime.
        cache.add(GENERATION_KEY, uuid.uuid4().hex, timeout=None)
        generation = cache.get(GENERATION_KEY)
    if generation is None:
        # A dummy cache, or one that dropped the key at once, stores nothing.
        return uuid.uuid4().hex
    return str(generation)


def _published_versions(generation: str) -> list[RuleVersion]:
    """Return every published version, the latest effective first (one query)."""
    key = f"tiers:ladder:{generation}:published"
    versions: list[RuleVersion] | None = cache.get(key)
    if versions is None:
        versions = list(
            RuleVersion.objects.filter(status=RuleVersion.Status.PUBLISHED).order_by(
                "-effective_from", "-number"
            )
        )
        cache.set(key, versions, timeout=LADDER_CACHE_SECONDS)
    return versions


def _in_effect(versions: list[RuleVersion], moment: dt.datetime) -> RuleVersion | None:
    """Pick the version in effect at ``moment``, as RuleVersion.objects.in_effect."""
    for version in versions:
        if version.effective_from is not None and version.effective_from <= moment:
            return version
    return None


def cached_ladder(as_of: dt.datetime | None = None) -> Ladder:
    """Return the ladder in effect at ``as_of`` (default now), from the cache.

    A cache miss costs eight queries: the published versions, the six that
    Ladder.load() runs, and the tiers outside the version. A hit costs none. Raises LadderError when no published version is in effect.
    """
    as_of = as_of or timezone.now()
    generation = _generation()
    version = _in_effect(_published_versions(generation), as_of)
    if version is None:
        raise LadderError(
            "No published rule version is in effect. Publish a version in "
            "the admin under Rule versions."
        )
    key = f"tiers:ladder:{generation}:version:{version.pk}"
    ladder: Ladder | None = cache.get(key)
    if ladder is None:
        ladder = Ladder.load(version)
        # Load the tiers outside the version now, so that no lookup on a
        # cached copy runs the query later.
        ladder.by_id(-1)
        cache.set(key, ladder, timeout=LADDER_CACHE_SECONDS)
        logger.info(
            "ladder cached version=%d generation=%s", version.number, generation
        )
    return ladder
