"""Progress towards the next tier: bars, percentages and the words around them.

Most tests build the explanation with the real TierRule.check() and unsaved
model instances, so they run without a database. The last ones evaluate a
member through explain_member() against the shared ladder fixture.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.utils import timezone, translation

from members.models import Member
from tests.conftest import local, make_member, record
from tiers.ladder import RequirementRule, TierRule
from tiers.metrics import WindowSpec
from tiers.models import Tier
from tiers.progress import (
    DEFAULT_COLOUR,
    build_progress,
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

# The same ladder as the `ladder` fixture in conftest.py, as plain rules.
SILVER = TierRule(
    id=2,
    name="Silver",
    rank=10,
    colour="#9ea7ad",
    combine="all",
    requirements=(RequirementRule(11, "net_spend", ROLLING_365, Decimal("1000")),),
)
GOLD = TierRule(
    id=3,
    name="Gold",
    rank=20,
    colour="#c9a227",
    combine="all",
    requirements=(
        RequirementRule(12, "net_spend", ROLLING_365, Decimal("5000")),
        RequirementRule(13, "orders", ROLLING_365, Decimal("6")),
    ),
)
PLATINUM = TierRule(
    id=4,
    name="Platinum",
    rank=30,
    colour="#5b6f8a",
    combine="any",
    requirements=(
        RequirementRule(14, "net_spend", LIFETIME, Decimal("50000")),
        RequirementRule(15, "growth_value", LIFETIME, Decimal("99999")),
    ),
)
COLOURS = {1: "#a0522d", 2: "#9ea7ad", 3: "#c9a227", 4: "#5b6f8a"}


def explanation(metrics: dict[str, Decimal]) -> dict[str, object]:
    """Build an explanation shaped like explain_member()'s, from raw metrics."""
    return {
        "as_of": AS_OF.isoformat(),
        "tiers": [tier.check(metrics, AS_OF) for tier in (SILVER, GOLD, PLATINUM)],
    }


def member_in(rule: TierRule | None) -> Member:
    """Return an unsaved member in the tier of ``rule``, or without a tier."""
    if rule is None:
        return Member(name="Wang Fang")
    tier = Tier(
        id=rule.id,
        name=rule.name,
        rank=rule.rank,
        colour=rule.colour,
        combine=rule.combine,
    )
    return Member(name="Wang Fang", tier=tier, tier_since=local(2025, 1, 5, 10, 0))


def metrics(spend: str = "0", orders: int = 0, lifetime_spend: str = "0", growth="0"):
    return {
        "net_spend__rolling_days_365": Decimal(spend),
        "orders__rolling_days_365": Decimal(orders),
        "net_spend__lifetime": Decimal(lifetime_spend),
        "growth_value__lifetime": Decimal(growth),
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
    with translation.override("zh-hans"):
        assert describe_rule("Gold", "all", 2) == "同时满足以下全部条件即可升级为Gold："
        assert describe_rule("Gold", "any", 2) == "满足以下任一条件即可升级为Gold："


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
    member = member_in(SILVER)

    with translation.override("en"):
        progress = build_progress(
            member, explanation(metrics("1240", orders=2)), COLOURS
        )

    assert progress.as_of == AS_OF
    assert progress.as_of_text == "14 Mar 2025"
    assert progress.current is not None
    assert progress.current.name == "Silver"
    assert progress.current.colour == "#9ea7ad"
    assert progress.current.since_text == "5 Jan 2025"

    next_tier = progress.next_tier
    assert next_tier is not None
    assert next_tier.badge.name == "Gold"
    assert next_tier.badge.colour == "#c9a227"
    assert next_tier.needs_all is True
    assert next_tier.reached is False
    assert next_tier.rule_text == "To reach Gold, meet all of these:"

    spend, orders = next_tier.requirements
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


def test_progress_labels_in_chinese():
    with translation.override("zh-hans"):
        progress = build_progress(
            member_in(SILVER), explanation(metrics("1240", orders=2)), COLOURS
        )

    spend, orders = progress.next_tier.requirements
    assert spend.label == "净消费"
    assert orders.label == "订单"
    assert spend.missing_text == "近365天内还差净消费¥3,760"
    assert spend.progress_text == "已达¥1,240，目标¥5,000"
    assert progress.next_tier.rule_text == "同时满足以下全部条件即可升级为Gold："
    assert progress.current.since_text == "2025年1月5日"


def test_progress_met_requirement():
    with translation.override("en"):
        progress = build_progress(
            member_in(SILVER), explanation(metrics("6200", orders=2)), COLOURS
        )

    spend, orders = progress.next_tier.requirements
    assert spend.met is True
    assert spend.percent == 100
    assert spend.missing == Decimal(0)
    assert spend.missing_text == "Reached"
    assert orders.met is False
    assert progress.next_tier.reached is False


def test_progress_top_tier_has_no_next():
    progress = build_progress(
        member_in(PLATINUM), explanation(metrics("60000", 9, "60000")), COLOURS
    )

    assert progress.current.name == "Platinum"
    assert progress.next_tier is None


def test_progress_any_tier_above_gold():
    with translation.override("en"):
        progress = build_progress(
            member_in(GOLD),
            explanation(metrics("6000", 7, lifetime_spend="20000", growth="150")),
            COLOURS,
        )

    next_tier = progress.next_tier
    assert next_tier.badge.name == "Platinum"
    assert next_tier.combine == "any"
    assert next_tier.needs_all is False
    assert next_tier.rule_text == "To reach Platinum, meet any one of these:"
    spend, growth = next_tier.requirements
    assert spend.percent == 40
    assert spend.missing_text == "¥30,000 more net spend in total"
    assert growth.percent == 0
    assert growth.missing_text == "99,849 more points of growth value in total"


def test_progress_any_reached_by_one():
    progress = build_progress(
        member_in(GOLD),
        explanation(metrics("6000", 7, lifetime_spend="20000", growth="100000")),
        COLOURS,
    )

    assert progress.next_tier.reached is True
    assert [r.met for r in progress.next_tier.requirements] == [False, True]


def test_progress_all_reached_before_evaluation():
    progress = build_progress(
        member_in(SILVER), explanation(metrics("5000", orders=6)), COLOURS
    )

    assert progress.next_tier.badge.name == "Gold"
    assert progress.next_tier.reached is True


def test_progress_member_without_tier():
    progress = build_progress(member_in(None), explanation(metrics("200")), COLOURS)

    assert progress.current is None
    assert progress.next_tier.badge.name == "Silver"
    (spend,) = progress.next_tier.requirements
    assert spend.percent == 20


def test_progress_unknown_colour_falls_back():
    progress = build_progress(
        member_in(SILVER), explanation(metrics("1240", 2)), colours={}
    )

    assert progress.next_tier.badge.colour == DEFAULT_COLOUR


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
    spend, orders = progress.next_tier.requirements
    assert spend.value == Decimal("1240")
    assert spend.percent == 24
    assert spend.value_text == "¥1,240"
    assert spend.missing_text == "¥3,760 more net spend within the last 365 days"
    assert orders.value == Decimal(2)
    assert orders.percent == 33


def test_member_progress_query_count(wang, django_assert_num_queries):
    wang = Member.objects.select_related("tier").get(pk=wang.pk)

    # Tiers, their requirements, activity kinds, the metrics aggregate, and
    # the tier colours.
    with django_assert_num_queries(5):
        member_progress(wang)
