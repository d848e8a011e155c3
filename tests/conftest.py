"""Shared fixtures: a small tier ladder and helpers that write real ledger rows."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from django.core.cache import caches

from members.models import Activity, ActivityKind, Channel, ChannelIdentity, Member
from tiers.models import RuleVersion, Tier
from tiers.publishing import publish
from tiers.rules import Need, TierSpec, VersionSpec, WeightSpec, all_of, any_of, build

pytest_plugins = ["tests.browser"]

CASES = Path(__file__).parent / "cases" / "import"
SHANGHAI = ZoneInfo("Asia/Shanghai")
# Fixture versions take effect long before any test data, so "as of" any
# test date finds them in effect.
LONG_AGO = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_references = itertools.count(1)


def local(*args: int) -> dt.datetime:
    """Return an aware datetime in the program's zone (Asia/Shanghai)."""
    return dt.datetime(*args, tzinfo=SHANGHAI)


@pytest.fixture(autouse=True)
def _private_cache(settings) -> None:
    """Give each test a cache of its own, not the shared cache directory."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": "tests",
        }
    }
    # Ids restart in every test's rolled-back transaction, so keys would too.
    caches["default"].clear()


@pytest.fixture
def store(db) -> Channel:
    return Channel.objects.create(code="store-xuhui", name="Xuhui store", kind="store")


def standard_spec(
    tiers: dict[str, Tier], weights: list[WeightSpec] | None = None
) -> VersionSpec:
    """Bronze (base), Silver (spend ≥ 1,000 in 365 days), Gold (spend ≥ 5,000
    and 6 orders in 365 days), Platinum (lifetime spend ≥ 50,000 or lifetime
    growth value ≥ 99,999)."""
    return VersionSpec(
        tiers=[
            TierSpec(tiers["bronze"]),
            TierSpec(tiers["silver"], all_of(Need("net_spend", 1000))),
            TierSpec(tiers["gold"], all_of(Need("net_spend", 5000), Need("orders", 6))),
            TierSpec(
                tiers["platinum"],
                any_of(
                    Need("net_spend", 50000, window="lifetime"),
                    Need("growth_value", 99999, window="lifetime"),
                ),
            ),
        ],
        weights=weights or [],
    )


def publish_spec(spec: VersionSpec) -> RuleVersion:
    """Build and publish a version, in effect from 2000 on."""
    return publish(
        build(spec),
        user=None,
        reason="test set-up",
        policy=RuleVersion.Policy.REEVALUATE,
        effective_from=LONG_AGO,
        allow_past=True,
    )


@pytest.fixture
def tiers(db) -> dict[str, Tier]:
    return {
        "bronze": Tier.objects.create(name="Bronze", rank=0, colour="#a0522d"),
        "silver": Tier.objects.create(name="Silver", rank=10, colour="#9ea7ad"),
        "gold": Tier.objects.create(name="Gold", rank=20, colour="#c9a227"),
        "platinum": Tier.objects.create(name="Platinum", rank=30, colour="#5b6f8a"),
    }


@pytest.fixture
def ladder(tiers) -> dict[str, Tier]:
    """The four tiers with the standard rules published as version 1."""
    publish_spec(standard_spec(tiers))
    return tiers


def make_member(channel: Channel, external_id: str, name: str = "") -> Member:
    member = Member.objects.create(name=name or f"Member {external_id}")
    ChannelIdentity.objects.create(
        member=member, channel=channel, external_id=external_id
    )
    return member


def record(
    member: Member,
    channel: Channel,
    kind: str,
    when: dt.datetime,
    amount: str | Decimal = "0",
    reference: str | None = None,
) -> Activity:
    """Write one ledger row; refunds are given negative amounts by the caller."""
    return Activity.objects.create(
        member=member,
        channel=channel,
        kind=ActivityKind.objects.get(code=kind),
        occurred_at=when,
        amount=Decimal(amount),
        reference=reference or f"T-{next(_references)}",
    )
