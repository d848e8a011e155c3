"""Helpers shared by the tests/test_benefits_*.py files. It has no tests itself.

The catalogue: Silver gives a welcome coupon and free shipping while in the
tier, Gold gives a welcome tote bag (stock 5), 5% off while in the tier, and
a "choose 1 of 3" pool. Tiers come from the standard ladder in conftest:
Silver needs ¥1,000 of net spend in the last 365 days.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.db import connection

from benefits.models import Benefit, BenefitPool, TierBenefit
from members.models import Channel, Member
from tests.conftest import make_member, record
from tiers.evaluation import evaluate
from tiers.models import Tier

ON_POSTGRESQL = os.environ.get("DATABASE_URL", "").startswith("postgres")
# The in-memory SQLite test database fails a concurrent writer at once with
# "database table is locked" and ignores select_for_update(), so races run on
# PostgreSQL only.
NEEDS_POSTGRESQL = "needs DATABASE_URL=postgres://..."


def create_catalogue(tiers: dict[str, Tier]) -> dict[str, Any]:
    """Create the catalogue described in the module docstring."""
    welcome_coupon = Benefit.objects.create(
        name="Welcome coupon ¥50", kind=Benefit.Kind.COUPON, valid_days=30
    )
    shipping = Benefit.objects.create(name="Free shipping", kind=Benefit.Kind.SERVICE)
    tote = Benefit.objects.create(
        name="Gold tote bag", kind=Benefit.Kind.GIFT, stock=5, valid_days=90
    )
    discount = Benefit.objects.create(
        name="5% off", kind=Benefit.Kind.DISCOUNT, value=Decimal("5")
    )

    TierBenefit.objects.create(
        tier=tiers["silver"], benefit=welcome_coupon, mode=TierBenefit.Mode.WELCOME
    )
    TierBenefit.objects.create(
        tier=tiers["silver"], benefit=shipping, mode=TierBenefit.Mode.ONGOING
    )
    TierBenefit.objects.create(
        tier=tiers["gold"], benefit=tote, mode=TierBenefit.Mode.WELCOME
    )
    TierBenefit.objects.create(
        tier=tiers["gold"], benefit=discount, mode=TierBenefit.Mode.ONGOING
    )

    pool = BenefitPool.objects.create(tier=tiers["gold"], name="Gold pick", choose=1)
    party = Benefit.objects.create(name="Listening party", kind=Benefit.Kind.EVENT)
    points = Benefit.objects.create(
        name="500 points", kind=Benefit.Kind.POINTS, value=Decimal("500")
    )
    poster = Benefit.objects.create(
        name="Signed poster", kind=Benefit.Kind.GIFT, stock=3
    )
    pool.options.set([party, points, poster])
    return {
        "welcome_coupon": welcome_coupon,
        "shipping": shipping,
        "tote": tote,
        "discount": discount,
        "pool": pool,
        "party": party,
        "points": points,
        "poster": poster,
    }


def spend(member: Member, channel: Channel, when: dt.datetime, amount: str) -> None:
    """Record a purchase (or, with a negative amount, a refund) an hour before ``when``."""
    kind = "refund" if amount.startswith("-") else "purchase"
    record(member, channel, kind, when - dt.timedelta(hours=1), amount)


def member_in_silver(
    channel: Channel, external_id: str, when: dt.datetime, name: str = ""
) -> Member:
    """Create a member who spends ¥1,000 and is evaluated into Silver at ``when``."""
    member = make_member(channel, external_id, name=name)
    spend(member, channel, when, "1000")
    evaluate([member.pk], as_of=when)
    member.refresh_from_db()
    return member


def member_in_gold(
    channel: Channel, external_id: str, when: dt.datetime, name: str = ""
) -> Member:
    """Create a member with six ¥1,000 orders, evaluated into Gold at ``when``."""
    member = make_member(channel, external_id, name=name)
    for day in range(1, 7):
        spend(member, channel, when - dt.timedelta(days=day), "1000")
    evaluate([member.pk], as_of=when)
    member.refresh_from_db()
    return member


def run_at_once(
    target: Callable[[int], Any], count: int
) -> tuple[list[Any], list[BaseException]]:
    """Run ``target(number)`` in ``count`` threads released together by a barrier.

    Returns the results and the exceptions raised, each in completion order.
    Every thread closes its own database connection.
    """
    start = threading.Barrier(count, timeout=30)
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(number: int) -> None:
        try:
            start.wait()
            results.append(target(number))
        except BaseException as error:  # reported to the caller
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    return results, errors
