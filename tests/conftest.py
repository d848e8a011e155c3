"""Shared fixtures: a small tier ladder and helpers that write real ledger rows."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from members.models import Activity, ActivityKind, Channel, ChannelIdentity, Member
from tiers.models import Requirement, Tier

CASES = Path(__file__).parent / "cases" / "import"
SHANGHAI = ZoneInfo("Asia/Shanghai")
_references = itertools.count(1)


def local(*args: int) -> dt.datetime:
    """Return an aware datetime in the program's zone (Asia/Shanghai)."""
    return dt.datetime(*args, tzinfo=SHANGHAI)


@pytest.fixture
def store(db) -> Channel:
    return Channel.objects.create(code="store-xuhui", name="Xuhui store", kind="store")


@pytest.fixture
def ladder(db) -> dict[str, Tier]:
    """Bronze (base), Silver (spend ≥ 1,000 in 365 days), Gold (spend ≥ 5,000 and
    6 orders in 365 days), Platinum (any of: lifetime spend ≥ 50,000, growth ≥ 99,999)."""
    bronze = Tier.objects.create(name="Bronze", rank=0, colour="#a0522d")
    silver = Tier.objects.create(name="Silver", rank=10, colour="#9ea7ad")
    gold = Tier.objects.create(name="Gold", rank=20, colour="#c9a227")
    platinum = Tier.objects.create(
        name="Platinum", rank=30, colour="#5b6f8a", combine=Tier.Combine.ANY
    )
    Requirement.objects.create(
        tier=silver,
        metric="net_spend",
        window="rolling_days",
        window_days=365,
        threshold=Decimal("1000"),
    )
    Requirement.objects.create(
        tier=gold,
        metric="net_spend",
        window="rolling_days",
        window_days=365,
        threshold=Decimal("5000"),
    )
    Requirement.objects.create(
        tier=gold,
        metric="orders",
        window="rolling_days",
        window_days=365,
        threshold=Decimal("6"),
    )
    Requirement.objects.create(
        tier=platinum, metric="net_spend", window="lifetime", threshold=Decimal("50000")
    )
    Requirement.objects.create(
        tier=platinum,
        metric="growth_value",
        window="lifetime",
        threshold=Decimal("99999"),
    )
    return {"bronze": bronze, "silver": silver, "gold": gold, "platinum": platinum}


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
