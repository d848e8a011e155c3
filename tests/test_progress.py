"""Progress towards the next tier: bars, percentages and the words around them.

Most tests build the explanation with the real Ladder.decide() over plain
rule objects, so they run without a database. The last ones evaluate a
member through explain_member() against the shared ladder fixture.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone, translation

from members.models import Member
from tests.conftest import local, make_member, record
from tiers.ladder import GroupRule, Ladder, RequirementRule, TierRuleSet
from tiers.metrics import KindCatalogue, WindowSpec
from tiers.models import Tier
from tiers.progress import (
    DEFAULT_COLOUR,
    GroupProgress,
    RequirementProgress,
    build_progress,
    describe_group,
    describe_missing,
    describe_rule,
    describe_window,
    make_badge,
    member_progress,
    percent_of,
    readable_text_colour,
    window_deadline,
)

AS_OF = local(2025, 3, 14, 12, 0)
ROLLING_365 = WindowSpec("rolling_days", 365)
YEAR = WindowSpec("year_to_date")
LIFETIME = WindowSpec("lifetime")


def need(requirement_id: int, metric: str, window: WindowSpec, threshold: str):
    return RequirementRule(requirement_id, metric, window, Decimal(threshold))


# The same ladder as the `ladder` fixture in conftest.py, as plain rules.
BRONZE = TierRuleSet(
    id=1, name="Bronze", rank=0, colour="#a0522d", entry=None, retention=None
)
SILVER = TierRuleSet(
    id=2,
    name="Silver",
    rank=10,
    colour="#9ea7ad",
    entry=GroupRule(21, "all", None, (need(11, "net_spend", ROLLING_365, "1000"),)),
    retention=None,
)
GOLD = TierRuleSet(
    id=3,
    name="Gold",
    rank=20,
    colour="#c9a227",
    entry=GroupRule(
        22,
        "all",
        None,
        (
            need(12, "net_spend", ROLLING_365, "5000"),
            need(13, "orders", ROLLING_365, "6"),
        ),
    ),
    retention=None,
)
PLATINUM = TierRuleSet(
    id=4,
    name="Platinum",
    rank=30,
    colour="#5b6f8a",
    entry=GroupRule(
        23,
        "any",
        None,
        (
            need(14, "net_spend", LIFETIME, "50000"),
            need(15, "growth_value", LIFETIME, "99999"),
        ),
    ),
    retention=None,
)


def make_ladder(*tiers: TierRuleSet) -> Ladder:
    return Ladder(
        version_id=1,
        version_number=1,
        policy="reevaluate",
        effective_from=None,
        tiers=tiers,
        kinds=KindCatalogue({}),
    )


LADDER = make_ladder(BRONZE, SILVER, GOLD, PLATINUM)


def explanation(
    metrics: dict[str, Decimal],
    current: TierRuleSet | None = None,
    ladder: Ladder = LADDER,
) -> dict[str, object]:
    """Build an explanation shaped like explain_member()'s, from raw metrics."""
    chosen, checks, retention = ladder.decide(
        metrics, AS_OF, current.id if current else None
    )
    return {
        "as_of": AS_OF.isoformat(),
        "tier": chosen.id,
        "tiers": checks,
        "retention": retention,
        "held_by_policy": "",
    }


def member_in(rule: TierRuleSet | None) -> Member:
    """Return an unsaved member in the tier of ``rule``, or without a tier."""
    if rule is None:
        return Member(name="Wang Fang")
    tier = Tier(id=rule.id, name=rule.name, rank=rule.rank, colour=rule.colour)
    return Member(name="Wang Fang", tier=tier, tier_since=local(2025, 1, 5, 10, 0))


def progress_of(
    current: TierRuleSet | None, metrics: dict[str, Decimal], ladder: Ladder = LADDER
):
    """Build the progress of a member in ``current`` the way member_progress does."""
    return build_progress(
        member_in(current), explanation(metrics, current, ladder), ladder, metrics
    )


def metrics(
    spend: str = "0",
    orders: int = 0,
    lifetime_spend: str = "0",
    growth="0",
    visits: int = 0,
):
    return {
        "net_spend__rolling_days_365": Decimal(spend),
        "orders__rolling_days_365": Decimal(orders),
        "net_spend__lifetime": Decimal(lifetime_spend),
        "growth_value__lifetime": Decimal(growth),
        "visits__rolling_days_365": Decimal(visits),
    }


@pytest.mark.parametrize(
    ("value", "target", "percent"),
    [
        ("200", "5000", 4),
        ("1240", "5000", 24),
        ("4999.99", "5000", 99),
        ("5000", "5000", 100),
        ("7500", "5000", 100),
        ("0", "5000", 0),
        ("-40", "5000", 0),
        ("1", "3", 33),
        ("2", "3", 66),
        ("0", "0", 100),
        ("-1", "0", 0),
    ],
)
def test_percent_floor_and_cap(value, target, percent):
    assert percent_of(Decimal(value), Decimal(target)) == percent


def test_deadline_of_calendar_year():
    assert window_deadline("year_to_date", AS_OF) == dt.date(2025, 12, 31)


def test_deadline_year_in_program_zone():
    # 20:00 UTC on 31 December 2025 is already 1 January 2026 in Shanghai.
    new_year_in_shanghai = dt.datetime(2025, 12, 31, 20, 0, tzinfo=dt.UTC)

    assert window_deadline("year_to_date", new_year_in_shanghai) == dt.date(
        2026, 12, 31
    )


def test_deadline_none_for_sliding_windows():
    assert window_deadline("rolling_days", AS_OF) is None
    assert window_deadline("lifetime", AS_OF) is None


MISSING_CASES = [
    # metric, missing, window, days, English, Chinese
    (
        "net_spend",
        "1240",
        "year_to_date",
        None,
        "¥1,240 more net spend by 31 December",
        "12月31日前还差净消费¥1,240",
    ),
    (
        "net_spend",
        "3760.5",
        "rolling_days",
        365,
        "¥3,760.50 more net spend within the last 365 days",
        "近365天内还差净消费¥3,760.50",
    ),
    (
        "orders",
        "3",
        "rolling_days",
        365,
        "3 more orders within the last 365 days",
        "近365天内还差3笔订单",
    ),
    (
        "orders",
        "1",
        "rolling_days",
        30,
        "1 more order within the last 30 days",
        "近30天内还差1笔订单",
    ),
    (
        "orders",
        "2",
        "rolling_days",
        1,
        "2 more orders within the last 1 day",
        "近1天内还差2笔订单",
    ),
    (
        "active_days",
        "5",
        "year_to_date",
        None,
        "5 more active days by 31 December",
        "12月31日前还需活跃5天",
    ),
    (
        "visits",
        "2",
        "rolling_days",
        90,
        "2 more visits within the last 90 days",
        "近90天内还差2次到店",
    ),
    (
        "reviews",
        "1",
        "lifetime",
        None,
        "1 more review in total",
        "累计还差1条评价",
    ),
    (
        "referrals",
        "4",
        "lifetime",
        None,
        "4 more referrals in total",
        "累计还差4次推荐",
    ),
    (
        "net_spend",
        "45000",
        "lifetime",
        None,
        "¥45,000 more net spend in total",
        "累计还差净消费¥45,000",
    ),
    (
        "growth_value",
        "1200.25",
        "lifetime",
        None,
        "1,201 more points of growth value in total",
        "累计还差1,201成长值",
    ),
    (
        "growth_value",
        "0.5",
        "lifetime",
        None,
        "1 more point of growth value in total",
        "累计还差1成长值",
    ),
]


@pytest.mark.parametrize(
    ("metric", "missing", "window", "days", "english", "chinese"), MISSING_CASES
)
def test_missing_words_both_languages(metric, missing, window, days, english, chinese):
    with translation.override("en"):
        assert (
            describe_missing(metric, Decimal(missing), window, days, AS_OF) == english
        )
    with translation.override("zh-hans"):
        assert (
            describe_missing(metric, Decimal(missing), window, days, AS_OF) == chinese
        )


def test_missing_words_when_reached():
    with translation.override("en"):
        assert describe_missing("orders", Decimal(0), "lifetime", None, AS_OF) == (
            "Reached"
        )
    with translation.override("zh-hans"):
        assert describe_missing("orders", Decimal(0), "lifetime", None, AS_OF) == (
            "已达成"
        )


def test_missing_words_unknown_metric():
    with pytest.raises(ValueError, match="bogus"):
        describe_missing("bogus", Decimal(1), "lifetime", None, AS_OF)


def test_window_words_both_languages():
    start, end = ROLLING_365.bounds(AS_OF)
    year_start, year_end = YEAR.bounds(AS_OF)

    with translation.override("en"):
        assert describe_window("rolling_days", 365, start, end) == (
            "Last 365 days (15 Mar 2024 – 14 Mar 2025)"
        )
        assert describe_window("year_to_date", None, year_start, year_end) == (
            "Calendar year 2025 (1 January – 31 December)"
        )
        assert describe_window("lifetime", None, None, AS_OF) == (
            "All time, up to 14 Mar 2025"
        )
    with translation.override("zh-hans"):
        assert describe_window("rolling_days", 365, start, end) == (
            "近365天（2024年3月15日至2025年3月14日）"
        )
        assert describe_window("year_to_date", None, year_start, year_end) == (
            "2025年度（1月1日至12月31日）"
        )
        assert describe_window("lifetime", None, None, AS_OF) == "累计至2025年3月14日"


def test_rule_words_all_any_single():
    with translation.override("en"):
        assert describe_rule("Gold", "all", 2) == "To reach Gold, meet all of these:"
        assert describe_rule("Gold", "any", 2) == (
            "To reach Gold, meet any one of these:"
        )
        assert describe_rule("Gold", "any", 1) == "To reach Gold:"
        assert describe_rule("Gold", "at_least", 3, at_least=2) == (
            "To reach Gold, meet at least 2 of these 3:"
        )
        # "At least 2" of one item can never be met, and the words show it.
        assert describe_rule("Gold", "at_least", 1, at_least=2) == (
            "To reach Gold, meet at least 2 of these 1:"
        )
    with translation.override("zh-hans"):
        assert describe_rule("Gold", "all", 2) == "同时满足以下全部条件即可升级为Gold："
        assert describe_rule("Gold", "any", 2) == "满足以下任一条件即可升级为Gold："
        assert describe_rule("Gold", "any", 1) == "升级为Gold需满足："
        assert describe_rule("Gold", "at_least", 3, at_least=2) == (
            "满足以下3项中的至少2项即可升级为Gold："
        )


def test_group_words_both_languages():
    with translation.override("en"):
        assert describe_group("all", 2) == "Meet all of these:"
        assert describe_group("any", 2) == "Meet any one of these:"
        assert describe_group("at_least", 3, 2) == "Meet at least 2 of these 3:"
        assert describe_group("any", 1) == ""
        assert describe_group("at_least", 1, 1) == ""
        assert describe_group("at_least", 1, 2) == "Meet at least 2 of these 1:"
    with translation.override("zh-hans"):
        assert describe_group("all", 2) == "同时满足以下全部条件："
        assert describe_group("any", 2) == "满足以下任一条件："
        assert describe_group("at_least", 3, 2) == "满足以下3项中的至少2项："


def test_text_colour_contrast():
    assert readable_text_colour("#c9a227") == "#000000"
    assert readable_text_colour("#ffffff") == "#000000"
    assert readable_text_colour("#1f2a44") == "#ffffff"
    assert readable_text_colour("#000000") == "#ffffff"


def test_badge_rejects_unsafe_colour():
    badge = make_badge("Gold", "red;background:url(x)")

    assert badge.colour == DEFAULT_COLOUR
    assert make_badge("Gold", None).colour == DEFAULT_COLOUR
    assert make_badge("Gold", "#C9A227").colour == "#C9A227"


def test_progress_silver_towards_gold():
    with translation.override("en"):
        progress = progress_of(SILVER, metrics("1240", orders=2))

    assert progress.as_of == AS_OF
    assert progress.as_of_text == "14 Mar 2025"
    assert progress.current is not None
    assert progress.current.name == "Silver"
    assert progress.current.colour == "#9ea7ad"
    assert progress.current.since_text == "5 Jan 2025"
    assert progress.retention is None

    next_tier = progress.next_tier
    assert next_tier is not None
    assert next_tier.badge.name == "Gold"
    assert next_tier.badge.colour == "#c9a227"
    assert next_tier.needs_all is True
    assert next_tier.reached is False
    assert next_tier.rule_text == "To reach Gold, meet all of these:"
    assert next_tier.sentence == (
        "net spend of at least ¥5,000 and at least 6 orders in the last 365 days"
    )

    spend, orders = next_tier.requirements
    assert spend.requirement_id == 12
    assert spend.metric == "net_spend"
    assert spend.label == "Net spend"
    assert spend.value == Decimal("1240")
    assert spend.target == Decimal("5000")
    assert spend.percent == 24
    assert spend.met is False
    assert spend.value_text == "¥1,240"
    assert spend.target_text == "¥5,000"
    assert spend.progress_text == "¥1,240 of ¥5,000"
    assert spend.missing == Decimal("3760")
    assert spend.missing_text == "¥3,760 more net spend within the last 365 days"
    assert spend.window_text == "Last 365 days (15 Mar 2024 – 14 Mar 2025)"

    assert orders.metric == "orders"
    assert orders.label == "Orders"
    assert orders.percent == 33
    assert orders.value_text == "2"
    assert orders.target_text == "6"
    assert orders.missing_text == "4 more orders within the last 365 days"


def test_progress_flat_rule_is_one_group():
    progress = progress_of(SILVER, metrics("1240", orders=2))

    rule = progress.next_tier.rule
    assert isinstance(rule, GroupProgress)
    assert rule.operator == "all"
    assert rule.met is False
    assert list(rule.items) == list(progress.next_tier.requirements)


def test_progress_labels_in_chinese():
    with translation.override("zh-hans"):
        progress = progress_of(SILVER, metrics("1240", orders=2))

    spend, orders = progress.next_tier.requirements
    assert spend.label == "净消费"
    assert orders.label == "订单"
    assert spend.missing_text == "近365天内还差净消费¥3,760"
    assert spend.progress_text == "已达¥1,240，目标¥5,000"
    assert progress.next_tier.rule_text == "同时满足以下全部条件即可升级为Gold："
    assert progress.next_tier.sentence == "最近365天净消费满¥5,000，且订单不少于6笔"
    assert progress.current.since_text == "2025年1月5日"


def test_progress_met_requirement():
    with translation.override("en"):
        progress = progress_of(SILVER, metrics("6200", orders=2))

    spend, orders = progress.next_tier.requirements
    assert spend.met is True
    assert spend.percent == 100
    assert spend.missing == Decimal(0)
    assert spend.missing_text == "Reached"
    assert orders.met is False
    assert progress.next_tier.reached is False


def test_progress_top_tier_has_no_next():
    progress = progress_of(PLATINUM, metrics("60000", 9, "60000"))

    assert progress.current.name == "Platinum"
    assert progress.next_tier is None


def test_progress_any_tier_above_gold():
    with translation.override("en"):
        progress = progress_of(
            GOLD, metrics("6000", 7, lifetime_spend="20000", growth="150")
        )

    next_tier = progress.next_tier
    assert next_tier.badge.name == "Platinum"
    assert next_tier.combine == "any"
    assert next_tier.needs_all is False
    assert next_tier.rule_text == "To reach Platinum, meet any one of these:"
    assert next_tier.sentence == (
        "net spend of at least ¥50,000 or growth value of at least 99,999 in total"
    )
    spend, growth = next_tier.requirements
    assert spend.percent == 40
    assert spend.missing_text == "¥30,000 more net spend in total"
    assert growth.percent == 0
    assert growth.missing_text == "99,849 more points of growth value in total"


def test_progress_any_reached_by_one():
    progress = progress_of(
        GOLD, metrics("6000", 7, lifetime_spend="20000", growth="100000")
    )

    assert progress.next_tier.reached is True
    assert [r.met for r in progress.next_tier.requirements] == [False, True]


def test_progress_all_reached_before_evaluation():
    progress = progress_of(SILVER, metrics("5000", orders=6))

    assert progress.next_tier.badge.name == "Gold"
    assert progress.next_tier.reached is True


def test_progress_member_without_tier():
    progress = progress_of(None, metrics("200"))

    assert progress.current is None
    assert progress.retention is None
    assert progress.next_tier.badge.name == "Silver"
    (spend,) = progress.next_tier.requirements
    assert spend.percent == 20


def test_progress_unknown_colour_falls_back():
    odd_gold = dataclasses.replace(GOLD, colour="gold;background:url(x)")
    ladder = make_ladder(BRONZE, SILVER, odd_gold, PLATINUM)

    progress = progress_of(SILVER, metrics("1240", 2), ladder)

    assert progress.next_tier.badge.colour == DEFAULT_COLOUR


# Nested groups and "at least N of"

# Gold by spending (¥5,000 and 6 orders in 365 days) or by lifetime growth
# value of 8,000.
NESTED_GOLD = dataclasses.replace(
    GOLD,
    entry=GroupRule(
        30,
        "any",
        None,
        (
            GOLD.entry,
            need(16, "growth_value", LIFETIME, "8000"),
        ),
    ),
)
NESTED_LADDER = make_ladder(BRONZE, SILVER, NESTED_GOLD, PLATINUM)

# Gold for two of: ¥5,000 spent, 6 orders, 4 visits, all in 365 days.
TWO_OF_THREE_GOLD = dataclasses.replace(
    GOLD,
    entry=GroupRule(
        31,
        "at_least",
        2,
        (
            need(12, "net_spend", ROLLING_365, "5000"),
            need(13, "orders", ROLLING_365, "6"),
            need(17, "visits", ROLLING_365, "4"),
        ),
    ),
)
TWO_OF_THREE_LADDER = make_ladder(BRONZE, SILVER, TWO_OF_THREE_GOLD, PLATINUM)


def test_progress_nested_group_keeps_tree():
    with translation.override("en"):
        progress = progress_of(
            SILVER, metrics("1240", orders=2, growth="2000"), NESTED_LADDER
        )

    next_tier = progress.next_tier
    assert next_tier.combine == "any"
    assert next_tier.rule_text == "To reach Gold, meet any one of these:"
    assert next_tier.sentence == (
        "(net spend of at least ¥5,000 and at least 6 orders in the last 365 days)"
        " or growth value of at least 8,000 in total"
    )
    spending, growth = next_tier.rule.items
    assert isinstance(spending, GroupProgress)
    assert spending.operator == "all"
    assert spending.heading == "Meet all of these:"
    assert spending.met is False
    assert [bar.metric for bar in spending.items] == ["net_spend", "orders"]
    assert isinstance(growth, RequirementProgress)
    assert growth.percent == 25
    assert growth.missing_text == "6,000 more points of growth value in total"


def test_progress_nested_bars_for_every_leaf():
    progress = progress_of(
        SILVER, metrics("1240", orders=2, growth="2000"), NESTED_LADDER
    )

    bars = progress.next_tier.requirements
    assert [bar.requirement_id for bar in bars] == [12, 13, 16]
    assert [bar.percent for bar in bars] == [24, 33, 25]


def test_progress_nested_group_met_reaches():
    progress = progress_of(SILVER, metrics("5000", orders=6), NESTED_LADDER)

    spending, growth = progress.next_tier.rule.items
    assert spending.met is True
    assert growth.met is False
    assert progress.next_tier.reached is True


def test_progress_nested_in_chinese():
    with translation.override("zh-hans"):
        progress = progress_of(SILVER, metrics("1240", orders=2), NESTED_LADDER)

    assert progress.next_tier.sentence == (
        "(最近365天净消费满¥5,000且订单不少于6笔)或累计成长值满8,000"
    )
    assert progress.next_tier.rule.items[0].heading == "同时满足以下全部条件："


def test_progress_at_least_words():
    with translation.override("en"):
        progress = progress_of(SILVER, metrics("1240", orders=2), TWO_OF_THREE_LADDER)

    next_tier = progress.next_tier
    assert next_tier.combine == "at_least"
    assert next_tier.at_least == 2
    assert next_tier.needs_all is False
    assert next_tier.rule_text == "To reach Gold, meet at least 2 of these 3:"
    assert next_tier.sentence == (
        "at least 2 of these 3: net spend of at least ¥5,000 in the last 365 days; "
        "at least 6 orders in the last 365 days; "
        "at least 4 visits in the last 365 days"
    )
    assert len(next_tier.requirements) == 3


def test_progress_at_least_reached_by_two():
    one_met = progress_of(SILVER, metrics("6000", orders=2), TWO_OF_THREE_LADDER)
    two_met = progress_of(
        SILVER, metrics("6000", orders=2, visits=4), TWO_OF_THREE_LADDER
    )

    assert one_met.next_tier.reached is False
    assert two_met.next_tier.reached is True
    assert [bar.met for bar in two_met.next_tier.requirements] == [True, False, True]


# Retention (保级)

# Gold is kept with ¥2,000 and 2 visits in 365 days, less than it takes to
# enter, but visits are not part of entry.
KEPT_GOLD = dataclasses.replace(
    GOLD,
    retention=GroupRule(
        32,
        "all",
        None,
        (
            need(18, "net_spend", ROLLING_365, "2000"),
            need(19, "visits", ROLLING_365, "2"),
        ),
    ),
)
RETENTION_LADDER = make_ladder(BRONZE, SILVER, KEPT_GOLD, PLATINUM)


def test_retention_shown_with_rule():
    with translation.override("en"):
        progress = progress_of(
            KEPT_GOLD, metrics("6000", orders=7, visits=2), RETENTION_LADDER
        )

    retention = progress.retention
    assert retention is not None
    assert retention.heading == "What keeps Gold"
    assert retention.sentence == (
        "net spend of at least ¥2,000 and at least 2 visits in the last 365 days"
    )
    assert retention.rule.heading == "Meet all of these:"
    assert [bar.metric for bar in retention.requirements] == ["net_spend", "visits"]
    assert [bar.percent for bar in retention.requirements] == [100, 100]


def test_retention_checked_from_ladder():
    # Entry still holds, so evaluation checked no retention rules and the
    # progress checks them itself.
    with translation.override("en"):
        entry_and_retention = progress_of(
            KEPT_GOLD, metrics("6000", orders=7, visits=2), RETENTION_LADDER
        )
        entry_only = progress_of(
            KEPT_GOLD, metrics("6000", orders=7, visits=0), RETENTION_LADDER
        )

    assert entry_and_retention.retention.met is True
    assert entry_and_retention.retention.entry_met is True
    assert entry_and_retention.retention.status_text == (
        "You meet these, so you keep Gold."
    )
    assert entry_only.retention.met is False
    assert entry_only.retention.entry_met is True


def test_retention_kept_by_entry_words():
    with translation.override("en"):
        progress = progress_of(
            KEPT_GOLD, metrics("6000", orders=7, visits=0), RETENTION_LADDER
        )

    assert progress.retention.status_text == (
        "You meet the requirements to reach Gold, so you keep it."
    )


def test_retention_from_explanation_when_present():
    below_entry = metrics("2500", orders=1, visits=2)
    checked = explanation(below_entry, KEPT_GOLD, RETENTION_LADDER)
    assert checked["retention"] is not None

    # No metrics: a met check can only come from the explanation.
    progress = build_progress(member_in(KEPT_GOLD), checked, RETENTION_LADDER, {})

    assert progress.retention.met is True
    assert progress.retention.entry_met is False
    assert [bar.value for bar in progress.retention.requirements] == [
        Decimal("2500"),
        Decimal("2"),
    ]


def test_retention_not_met_words_both_languages():
    falling = metrics("100", orders=1)

    with translation.override("en"):
        english = progress_of(KEPT_GOLD, falling, RETENTION_LADDER).retention
    with translation.override("zh-hans"):
        chinese = progress_of(KEPT_GOLD, falling, RETENTION_LADDER).retention

    assert english.met is False
    assert english.entry_met is False
    assert english.status_text == (
        "Not met yet. Meet these by the next evaluation to keep Gold."
    )
    assert chinese.heading == "Gold保级条件"
    assert chinese.sentence == "最近365天净消费满¥2,000，且到店不少于2次"
    assert chinese.status_text == (
        "尚未满足。请在下次评定前达成以下条件，以保持Gold等级。"
    )


def test_retention_absent_without_own_rules():
    progress = progress_of(GOLD, metrics("6000", orders=7), LADDER)

    assert progress.retention is None


def test_retention_ignored_for_base_tier():
    kept_bronze = dataclasses.replace(
        BRONZE, retention=GroupRule(33, "all", None, (need(20, "visits", YEAR, "1"),))
    )
    ladder = make_ladder(kept_bronze, SILVER, GOLD, PLATINUM)

    progress = progress_of(kept_bronze, metrics(), ladder)

    assert progress.retention is None


@pytest.fixture
def wang(ladder, store) -> Member:
    """A Silver member with ¥1,240 of net spend from two orders in 30 days."""
    member = make_member(store, "W-1", name="Wang Fang")
    member.tier = ladder["silver"]
    member.tier_since = timezone.now() - dt.timedelta(days=40)
    member.save()
    now = timezone.now()
    record(member, store, "purchase", now - dt.timedelta(days=30), "1000")
    record(member, store, "purchase", now - dt.timedelta(days=3), "300")
    record(member, store, "refund", now - dt.timedelta(days=2), "-60")
    return member


def test_member_progress_from_ledger(wang):
    with translation.override("en"):
        progress = member_progress(wang)

    assert progress.current.name == "Silver"
    assert progress.next_tier.badge.name == "Gold"
    assert progress.next_tier.badge.colour == "#c9a227"
    assert progress.next_tier.sentence == (
        "net spend of at least ¥5,000 and at least 6 orders in the last 365 days"
    )
    spend, orders = progress.next_tier.requirements
    assert spend.value == Decimal("1240")
    assert spend.percent == 24
    assert spend.value_text == "¥1,240"
    assert spend.missing_text == "¥3,760 more net spend within the last 365 days"
    assert orders.value == Decimal(2)
    assert orders.percent == 33


def test_member_progress_query_count(wang, django_assert_num_queries):
    wang = Member.objects.select_related("tier").get(pk=wang.pk)

    # Eight queries: the version in effect, its rule groups, requirements,
    # tier rules joined with tiers, activity kinds and growth value weights,
    # the member's active overrides, then the metrics aggregate. Tier colours
    # come with the tier rules.
    with django_assert_num_queries(8):
        member_progress(wang)
