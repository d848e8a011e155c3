"""The cached ladder: free to read, reset by publishing, right at any moment."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.cache import cache
from django.utils import timezone

from tests.conftest import publish_spec
from tiers.ladder import LadderError
from tiers.ladder_cache import GENERATION_KEY, cached_ladder, forget_ladders
from tiers.models import RuleVersion
from tiers.publishing import publish
from tiers.rules import Need, TierSpec, VersionSpec, all_of, build


def gold_at(tiers, spend: int) -> VersionSpec:
    return VersionSpec(
        tiers=[
            TierSpec(tiers["bronze"]),
            TierSpec(tiers["gold"], all_of(Need("net_spend", spend))),
        ]
    )


def test_second_read_runs_no_query(ladder, django_assert_num_queries):
    first = cached_ladder()

    with django_assert_num_queries(0):
        second = cached_ladder()

    assert second == first
    assert second.version_number == 1


def test_cached_ladder_knows_outside_tiers(tiers, django_assert_num_queries):
    publish_spec(gold_at(tiers, 500))
    cached_ladder()

    with django_assert_num_queries(0):
        silver = cached_ladder().by_id(tiers["silver"].pk)

    assert silver is not None
    assert not silver.in_version


def test_publishing_resets_cache(tiers):
    publish_spec(gold_at(tiers, 500))
    assert cached_ladder().version_number == 1

    publish_spec(gold_at(tiers, 900))
    latest = cached_ladder()

    assert latest.version_number == 2
    (gold_entry,) = latest.tiers[1].entry.leaves()  # type: ignore[union-attr]
    assert str(gold_entry.threshold) == "900.00"


def test_scheduled_version_applies_at_its_time(tiers):
    publish_spec(gold_at(tiers, 500))
    start = timezone.now() + dt.timedelta(days=2)
    publish(
        build(gold_at(tiers, 700)),
        user=None,
        reason="next season",
        policy=RuleVersion.Policy.GRANDFATHER,
        effective_from=start,
    )

    assert cached_ladder().version_number == 1
    assert cached_ladder(start + dt.timedelta(seconds=1)).version_number == 2


def test_lost_generation_starts_fresh(ladder, django_assert_max_num_queries):
    cached_ladder()
    cache.delete(GENERATION_KEY)

    with django_assert_max_num_queries(8):
        reloaded = cached_ladder()

    assert reloaded.version_number == 1
    assert cache.get(GENERATION_KEY) is not None


def test_forget_ladders_changes_generation(ladder):
    cached_ladder()
    before = cache.get(GENERATION_KEY)

    forget_ladders()

    assert cache.get(GENERATION_KEY) != before


def test_nothing_published_raises(tiers):
    with pytest.raises(LadderError, match="No published rule version"):
        cached_ladder()
