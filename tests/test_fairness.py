"""The fairness report on loyal low-spenders, against a hand-computed ledger.

Nine members are active between 1 July 2024 and 30 June 2025 (the 365 days
ending at AS_OF). Their active days, orders and net spend:

    member   days  orders  spend   why
    amy         8       0      0   8 visits
    ben         6       6    300   6 purchases of ¥50
    cao         1       1  6,000
    dai         2       2  1,200   2 purchases of ¥600
    eve         3       0      0   3 visits
    fan         4       4  1,200   4 purchases of ¥300
    gao         1       1  2,000
    han         5       5  5,000   5 purchases of ¥1,000
    kai         6       2  1,000   2 purchases of ¥500 and 4 visits

Sorted active days are 1 1 2 3 4 5 6 6 8, so the 75th percentile (linear,
position 0.75 × 8 = 6) is 6. Sorted orders are 0 0 1 1 2 2 4 5 6, so it is 4.
Sorted spend is 0 0 300 1,000 1,200 1,200 2,000 5,000 6,000, median 1,200.

Active often: amy, ben, kai (days ≥ 6) and ben, fan, han (orders ≥ 4).
Of those, spend ≤ 1,200 leaves amy, ben, fan and kai. Han spends 5,000.

The version in effect is the standard one: amy and ben (under ¥1,000) are
Bronze, fan and kai Silver. The draft makes 6 active days enough for Silver,
and two of ¥5,000, 6 orders and 6 active days enough for Gold: ben reaches
Gold, the other three Silver.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from members.models import Member
from tests.conftest import local, make_member, record, standard_spec
from tiers.fairness import FairnessThresholds, fairness_report, percentile_75
from tiers.models import RuleVersion, Tier
from tiers.rules import Need, TierSpec, VersionSpec, any_of, at_least, build

AS_OF = local(2025, 6, 30, 12, 0)


def purchases(member, store, count: int, amount: str) -> None:
    for day in range(1, count + 1):
        record(member, store, "purchase", local(2025, 1, day, 12), amount)


def visits(member, store, count: int) -> None:
    for day in range(1, count + 1):
        record(member, store, "visit", local(2025, 3, day, 12))


@pytest.fixture
def members(ladder, store) -> dict[str, Member]:
    people = {
        name: make_member(store, name.upper(), name=name)
        for name in (
            "amy",
            "ben",
            "cao",
            "dai",
            "eve",
            "fan",
            "gao",
            "han",
            "kai",
            "ivy",
            "jun",
            "zoe",
        )
    }

    visits(people["amy"], store, 8)
    purchases(people["ben"], store, 6, "50")
    purchases(people["cao"], store, 1, "6000")
    purchases(people["dai"], store, 2, "600")
    visits(people["eve"], store, 3)
    purchases(people["fan"], store, 4, "300")
    purchases(people["gao"], store, 1, "2000")
    purchases(people["han"], store, 5, "1000")
    purchases(people["kai"], store, 2, "500")
    visits(people["kai"], store, 4)

    # Ivy bought only before the window. Jun bought before it and got a
    # refund inside it, and a refund day is not an active day. Zoe has no
    # activity at all.
    record(people["ivy"], store, "purchase", local(2024, 6, 30, 12), "900")
    record(people["jun"], store, "purchase", local(2024, 5, 1, 12), "800")
    record(people["jun"], store, "refund", local(2025, 2, 1, 12), "-800")

    return people


def activity_draft(tiers: dict[str, Tier]) -> RuleVersion:
    """A draft where activity counts: 6 active days reach Silver, and two of
    ¥5,000, 6 orders and 6 active days reach Gold."""
    spec = standard_spec(tiers)
    spec.tiers[1] = TierSpec(
        tiers["silver"], any_of(Need("net_spend", 1000), Need("active_days", 6))
    )
    spec.tiers[2] = TierSpec(
        tiers["gold"],
        at_least(
            2,
            Need("net_spend", 5000),
            Need("orders", 6),
            Need("active_days", 6),
        ),
    )
    return build(spec)


@pytest.fixture
def draft(members, ladder) -> RuleVersion:
    return activity_draft(ladder)


def test_thresholds_by_hand(draft):
    report = fairness_report(draft, as_of=AS_OF)

    assert report.thresholds == FairnessThresholds(
        active_members=9,
        active_days=Decimal(6),
        orders=Decimal(4),
        net_spend=Decimal(1200),
    )
    assert report.window_days == 365
    assert report.as_of == AS_OF


def test_report_names_versions(draft):
    report = fairness_report(draft, as_of=AS_OF)

    assert report.current_number == 1
    assert report.draft_number == draft.number
    assert report.draft_number == 2


def test_loyal_low_spenders_found(draft, members):
    report = fairness_report(draft, as_of=AS_OF)

    ids = [row.member_id for row in report.members]
    expected = ["amy", "ben", "fan", "kai"]
    assert ids == sorted(members[name].pk for name in expected)
    assert report.count == 4


def test_thresholds_are_inclusive(draft, members):
    report = fairness_report(draft, as_of=AS_OF)
    rows = {row.member_id: row for row in report.members}

    # Ben and Kai have exactly the 75th percentile of active days.
    assert rows[members["ben"].pk].active_days == 6
    assert rows[members["kai"].pk].active_days == 6
    # Fan has exactly the 75th percentile of orders and the median spend.
    fan = rows[members["fan"].pk]
    assert fan.orders == 4
    assert fan.net_spend == Decimal("1200")


@pytest.mark.parametrize(
    "name",
    [
        "han",  # active often, but spends 5,000
        "dai",  # spends the median, but not active often
        "eve",
        "cao",
        "gao",
        "ivy",  # active only before the window
        "jun",  # only a refund inside the window
        "zoe",  # no activity
    ],
)
def test_others_left_out(draft, members, name):
    report = fairness_report(draft, as_of=AS_OF)

    assert members[name].pk not in {row.member_id for row in report.members}


def test_member_rows_by_hand(draft, members):
    report = fairness_report(draft, as_of=AS_OF)
    rows = {row.member_id: row for row in report.members}

    amy = rows[members["amy"].pk]
    assert (amy.active_days, amy.orders, amy.net_spend) == (8, 0, Decimal(0))
    assert (amy.current_tier, amy.draft_tier) == ("Bronze", "Silver")
    ben = rows[members["ben"].pk]
    assert (ben.active_days, ben.orders, ben.net_spend) == (6, 6, Decimal(300))
    assert (ben.current_tier, ben.draft_tier) == ("Bronze", "Gold")
    fan = rows[members["fan"].pk]
    assert (fan.current_tier, fan.draft_tier) == ("Silver", "Silver")
    kai = rows[members["kai"].pk]
    assert (kai.active_days, kai.orders, kai.net_spend) == (6, 2, Decimal(1000))
    assert (kai.current_tier, kai.draft_tier) == ("Silver", "Silver")


def test_tier_counts_per_version(draft):
    report = fairness_report(draft, as_of=AS_OF)

    assert report.current_counts == {
        "Bronze": 2,
        "Silver": 2,
        "Gold": 0,
        "Platinum": 0,
    }
    assert report.draft_counts == {
        "Bronze": 0,
        "Silver": 3,
        "Gold": 1,
        "Platinum": 0,
    }
    assert list(report.draft_counts) == ["Bronze", "Silver", "Gold", "Platinum"]


def test_stored_tier_kept_by_retention(ladder, store):
    # A Gold member below Gold's entry rules, in a version where Gold is kept
    # by 3 active days: the report places her as evaluation would.
    kept = VersionSpec(
        tiers=[
            TierSpec(ladder["bronze"]),
            TierSpec(ladder["gold"], Need("net_spend", 5000)),
        ]
    )
    kept.tiers[1].retention = Need("active_days", 3)
    draft = build(kept)
    member = make_member(store, "R-1", name="ruo")
    member.tier = ladder["gold"]
    member.tier_since = AS_OF - dt.timedelta(days=400)
    member.save()
    visits(member, store, 4)

    report = fairness_report(draft, as_of=AS_OF)

    (row,) = report.members
    assert row.current_tier == "Bronze"
    assert row.draft_tier == "Gold"


def test_orders_test_needs_an_order(ladder, store):
    # Four of five active members never ordered, so the orders percentile is
    # 0. Members without orders must not pass the orders test on that alone.
    people = {}
    for name, days in (("v1", 1), ("v2", 1), ("v3", 2), ("v4", 8)):
        people[name] = make_member(store, name.upper(), name=name)
        visits(people[name], store, days)
    people["p"] = make_member(store, "P", name="p")
    purchases(people["p"], store, 1, "10")

    report = fairness_report(activity_draft(ladder), as_of=AS_OF)

    assert report.thresholds.orders == Decimal(0)
    assert report.thresholds.active_days == Decimal(2)
    assert report.thresholds.net_spend == Decimal(0)
    assert [row.member_id for row in report.members] == [
        people["v3"].pk,
        people["v4"].pk,
    ]


def test_empty_ledger(ladder):
    report = fairness_report(activity_draft(ladder), as_of=AS_OF)

    assert report.thresholds is None
    assert report.count == 0
    assert report.current_counts == {
        "Bronze": 0,
        "Silver": 0,
        "Gold": 0,
        "Platinum": 0,
    }


def test_naive_as_of_rejected(draft):
    with pytest.raises(ValueError, match="aware"):
        fairness_report(draft, as_of=dt.datetime(2025, 6, 30, 12, 0))


def test_query_count_flat(draft, members, store, django_assert_num_queries):
    # Eighteen queries:
    # - the version in effect,
    # - for it and for the draft: rule groups, requirements, tier rules with
    #   tiers, activity kinds and growth value weights (10),
    # - one aggregate over the window,
    # - for each version: the members, their active overrides and their
    #   metrics aggregate (6).
    with django_assert_num_queries(18):
        fairness_report(draft, as_of=AS_OF)

    for number in range(10):
        member = make_member(store, f"MORE-{number}", name=f"more {number}")
        visits(member, store, 9)

    with django_assert_num_queries(18):
        report = fairness_report(draft, as_of=AS_OF)
    # Ten members with 9 active days and no spend raise the active days
    # percentile to 9 and lower the median spend to 0, so only they qualify.
    assert report.count == 10


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["5"], "5"),
        (["1", "2"], "1.75"),
        (["1", "2", "3", "4"], "3.25"),
        (["4", "1", "3", "2"], "3.25"),
        (["1", "1", "2", "3", "4", "5", "6", "6", "8"], "6"),
    ],
)
def test_percentile_linear(values, expected):
    assert percentile_75([Decimal(v) for v in values]) == Decimal(expected)


def test_percentile_of_nothing():
    with pytest.raises(ValueError, match="no values"):
        percentile_75([])
