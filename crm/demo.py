"""The demo program on real data: CDNOW's purchase log as a member ledger.

The data set is P. Fader and B. Hardie's CDNOW purchase log (23,570 customers
who first bought in the first quarter of 1997, followed to June 1998), shipped
inside the MIT-licensed PyPI package Lifetimes 0.11.3 as
``lifetimes/datasets/CDNOW_master.txt``. Its dates are moved forward by whole
years so that "last 365 days" windows cover real activity today.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import zipfile
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from django.db import transaction

from benefits.models import Benefit, BenefitPool, TierBenefit
from members.models import Channel
from tiers.models import RuleVersion, Tier
from tiers.publishing import publish
from tiers.rules import Need, TierSpec, VersionSpec, WeightSpec, all_of, any_of, build

logger = logging.getLogger(__name__)

CDNOW_MEMBER = "lifetimes/datasets/CDNOW_master.txt"
CDNOW_LAST_DAY = dt.date(1998, 6, 30)
CHANNEL_CODE = "cdnow"
DATA_NOTICE = (
    "Demo data: the CDNOW purchase log, 1997–1998 (P. Fader and B. Hardie), "
    "with every date moved forward by whole years so that it ends before today."
)


class DemoDataError(Exception):
    """Raised when the CDNOW file is missing or not in the expected layout."""


def extract_cdnow(wheel: Path, target: Path) -> Path:
    """Copy CDNOW_master.txt out of the Lifetimes wheel (a zip file)."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            data = archive.read(CDNOW_MEMBER)
    except (zipfile.BadZipFile, KeyError) as error:
        raise DemoDataError(
            f"{wheel} does not contain {CDNOW_MEMBER}: {error}"
        ) from error
    target.write_bytes(data)
    return target


def year_shift(today: dt.date) -> int:
    """Return the whole number of years that moves 30 June 1998 closest before today."""
    shift = today.year - CDNOW_LAST_DAY.year
    if CDNOW_LAST_DAY.replace(year=CDNOW_LAST_DAY.year + shift) > today:
        shift -= 1
    return shift


def _shift(day: dt.date, years: int) -> dt.date:
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February into a common year
        return day.replace(year=day.year + years, day=28)


@dataclass(frozen=True)
class ConvertedFiles:
    members: Path
    activities: Path
    customers: int
    purchases: int
    shift_years: int


def convert_cdnow(source: Path, folder: Path, today: dt.date) -> ConvertedFiles:
    """Write the member and activity CSV files that staff would import.

    Each CDNOW line becomes one purchase with a stable reference
    ``<customer>-<date>-<n>``, n counting the customer's lines on that date, so
    converting again gives the same references and re-importing adds nothing.
    """
    shift = year_shift(today)
    first_purchase: dict[str, dt.date] = {}
    seen_on_day: Counter[tuple[str, str]] = Counter()
    activities_path = folder / "cdnow_activities.csv"
    members_path = folder / "cdnow_members.csv"
    purchases = 0
    with (
        source.open(encoding="ascii", newline="") as lines,
        activities_path.open("w", encoding="utf-8", newline="") as out,
    ):
        writer = csv.writer(out)
        writer.writerow(
            [
                "external_id",
                "occurred_at",
                "amount",
                "quantity",
                "channel",
                "kind",
                "reference",
            ]
        )
        for line_number, line in enumerate(lines, start=1):
            fields = line.split()
            if not fields or fields[0] == "customer_id":
                continue
            if len(fields) != 4:
                raise DemoDataError(
                    f"{source} line {line_number}: expected 4 fields "
                    f"(customer, date, CDs, dollars), found {len(fields)}."
                )
            customer, raw_date, cds, dollars = fields
            day = _shift(dt.datetime.strptime(raw_date, "%Y%m%d").date(), shift)  # noqa: DTZ007
            seen_on_day[(customer, raw_date)] += 1
            reference = f"{customer}-{raw_date}-{seen_on_day[(customer, raw_date)]}"
            # CDNOW records days, not times: noon keeps every purchase inside its
            # day in the program's time zone.
            writer.writerow(
                [
                    customer,
                    f"{day.isoformat()} 12:00",
                    f"{Decimal(dollars):.2f}",
                    cds,
                    CHANNEL_CODE,
                    "purchase",
                    reference,
                ]
            )
            purchases += 1
            if customer not in first_purchase or day < first_purchase[customer]:
                first_purchase[customer] = day
    with members_path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(
            ["external_id", "name", "phone", "email", "channel", "joined_at"]
        )
        for customer in sorted(first_purchase):
            writer.writerow(
                [
                    customer,
                    f"CDNOW customer {customer}",
                    "",
                    "",
                    CHANNEL_CODE,
                    first_purchase[customer].isoformat(),
                ]
            )
    logger.info(
        "converted CDNOW customers=%d purchases=%d shift_years=%d",
        len(first_purchase),
        purchases,
        shift,
    )
    return ConvertedFiles(
        members_path, activities_path, len(first_purchase), purchases, shift
    )


@transaction.atomic
def ensure_demo_program() -> bool:
    """Create the demo channel, tiers, published rules and benefits once.

    Returns whether anything was created. Amounts are the log's US dollars.
    The first version is published with the "new activity" policy. No member
    has a tier yet, so the evaluation that follows places everyone.
    """
    Channel.objects.get_or_create(
        code=CHANNEL_CODE,
        defaults={"name": "CDNOW online store", "kind": Channel.Kind.ECOMMERCE},
    )
    if Tier.objects.exists():
        return False
    member = Tier.objects.create(
        name="Member",
        rank=0,
        colour="#7a8691",
        description="Every registered customer.",
    )
    silver = Tier.objects.create(name="Silver", rank=10, colour="#9ea7ad")
    gold = Tier.objects.create(name="Gold", rank=20, colour="#c9a227")
    platinum = Tier.objects.create(name="Platinum", rank=30, colour="#4b5d7a")
    spec = VersionSpec(
        note="Demo ladder: spend, orders, active days and growth value.",
        tiers=[
            TierSpec(member),
            TierSpec(silver, any_of(Need("net_spend", 100), Need("orders", 3))),
            TierSpec(
                gold,
                all_of(
                    Need("net_spend", 300), Need("orders", 4), Need("active_days", 3)
                ),
                retention=all_of(Need("net_spend", 200), Need("orders", 3)),
            ),
            TierSpec(
                platinum,
                any_of(
                    all_of(
                        Need("net_spend", 800, window="year_to_date"),
                        Need("orders", 6),
                        label="Platinum: spend route",
                    ),
                    Need("growth_value", 3000, window="lifetime"),
                ),
            ),
        ],
        weights=[WeightSpec("purchase", per_event=10, per_unit=1)],
    )
    publish(
        build(spec),
        user=None,
        reason="Demo set-up.",
        policy=RuleVersion.Policy.NEW_ACTIVITY,
    )
    _create_demo_benefits(silver, gold, platinum)
    logger.info("created demo ladder tiers=4 version=1")
    return True


def _create_demo_benefits(silver: Tier, gold: Tier, platinum: Tier) -> None:
    """Create welcome gifts, ongoing perks and one "choose 1 of 3" pool.

    The base tier has none, so the first evaluation issues benefits only to
    members placed above it. The Gold gift's stock is smaller than the
    number of Gold members in the CDNOW data, so some grants wait for stock,
    and the Platinum box waits in the approval queue.
    """
    Kind = Benefit.Kind
    welcome = [
        (
            silver,
            Benefit(
                name="Welcome coupon: $5 off your next order",
                kind=Kind.COUPON,
                value=Decimal("5"),
                valid_days=60,
            ),
        ),
        (
            gold,
            Benefit(
                name="Gold welcome gift: CDNOW tote bag",
                kind=Kind.GIFT,
                stock=150,
                valid_days=90,
            ),
        ),
        (
            platinum,
            Benefit(
                name="Platinum welcome box",
                kind=Kind.GIFT,
                stock=40,
                valid_days=90,
                approval_required=True,
                approval_days=3,
            ),
        ),
    ]
    for tier, benefit in welcome:
        benefit.save()
        TierBenefit.objects.create(
            tier=tier, benefit=benefit, mode=TierBenefit.Mode.WELCOME
        )
    ongoing = [
        ("Free standard shipping", Kind.SERVICE, None, [silver, gold, platinum]),
        ("5% off every order", Kind.DISCOUNT, Decimal("5"), [gold]),
        ("10% off every order", Kind.DISCOUNT, Decimal("10"), [platinum]),
        ("Dedicated support line", Kind.SERVICE, None, [platinum]),
    ]
    for name, kind, value, tiers in ongoing:
        benefit = Benefit.objects.create(name=name, kind=kind, value=value)
        benefit.tiers.set(tiers, through_defaults={"mode": TierBenefit.Mode.ONGOING})
    pool = BenefitPool.objects.create(
        tier=gold, name="Gold pick: choose 1 of 3", choose=1
    )
    pool.options.set(
        [
            Benefit.objects.create(
                name="Listening party invitation", kind=Kind.EVENT, valid_days=60
            ),
            Benefit.objects.create(
                name="500 bonus points", kind=Kind.POINTS, value=Decimal("500")
            ),
            Benefit.objects.create(
                name="Signed band poster", kind=Kind.GIFT, stock=100, valid_days=90
            ),
        ]
    )
