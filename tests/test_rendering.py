"""Rule trees in plain Chinese and English, and the logic of nested groups.

Rules are built as plain GroupRule and RequirementRule objects, so most tests
run without a database. The last ones render a version loaded from the
database through Ladder.load().
"""

from __future__ import annotations

import itertools
from decimal import Decimal

import pytest
from django.utils import translation

from members.models import ActivityKind, Channel
from tests.conftest import local, publish_spec, standard_spec
from tiers.ladder import GroupRule, Ladder, RequirementRule, TierRuleSet
from tiers.metrics import KindCatalogue, WindowSpec
from tiers.models import GrowthWeight
from tiers.rendering import render_group, render_tier, render_version, render_weights

AS_OF = local(2025, 3, 14, 12, 0)
ROLLING_365 = WindowSpec("rolling_days", 365)
ROLLING_1 = WindowSpec("rolling_days", 1)
YEAR = WindowSpec("year_to_date")
LIFETIME = WindowSpec("lifetime")
_ids = itertools.count(100)


def need(metric: str, threshold: str, window: WindowSpec = ROLLING_365):
    return RequirementRule(next(_ids), metric, window, Decimal(threshold))


def all_of(*items):
    return GroupRule(next(_ids), "all", None, items)


def any_of(*items):
    return GroupRule(next(_ids), "any", None, items)


def at_least(count: int, *items):
    return GroupRule(next(_ids), "at_least", count, items)


def both(group: GroupRule) -> tuple[str, str]:
    """Return the group's text in Chinese and in English."""
    return render_group(group, "zh-hans"), render_group(group, "en")


SPEND = need("net_spend", "5000")
ORDERS = need("orders", "6")
GROWTH = need("growth_value", "8000", LIFETIME)


# Sentences


def test_all_shares_window():
    chinese, english = both(all_of(SPEND, ORDERS))

    assert chinese == "最近365天净消费满¥5,000，且订单不少于6笔"
    assert english == (
        "net spend of at least ¥5,000 and at least 6 orders in the last 365 days"
    )


def test_nested_group_in_parentheses():
    chinese, english = both(any_of(all_of(SPEND, ORDERS), GROWTH))

    assert chinese == "(最近365天净消费满¥5,000且订单不少于6笔)或累计成长值满8,000"
    assert english == (
        "(net spend of at least ¥5,000 and at least 6 orders in the last 365 days)"
        " or growth value of at least 8,000 in total"
    )


def test_at_least_lists_items():
    rule = at_least(2, SPEND, ORDERS, need("visits", "4", YEAR))

    chinese, english = both(rule)

    assert chinese == (
        "满足以下3项中的至少2项：最近365天净消费满¥5,000；"
        "最近365天订单不少于6笔；本自然年内到店不少于4次"
    )
    assert english == (
        "at least 2 of these 3: net spend of at least ¥5,000 in the last 365 days; "
        "at least 6 orders in the last 365 days; "
        "at least 4 visits in the calendar year to date"
    )


def test_at_least_nested_in_all():
    rule = all_of(
        GROWTH, at_least(2, SPEND, ORDERS, need("active_days", "30", ROLLING_365))
    )

    chinese, english = both(rule)

    assert chinese == (
        "累计成长值满8,000，且(满足以下3项中的至少2项：最近365天净消费满¥5,000；"
        "最近365天订单不少于6笔；最近365天活跃天数不少于30天)"
    )
    assert english == (
        "growth value of at least 8,000 in total and (at least 2 of these 3: "
        "net spend of at least ¥5,000 in the last 365 days; "
        "at least 6 orders in the last 365 days; "
        "at least 30 active days in the last 365 days)"
    )


def test_group_inside_at_least_in_parentheses():
    rule = at_least(1, any_of(SPEND, ORDERS), GROWTH)

    chinese, english = both(rule)

    assert chinese == (
        "满足以下2项中的至少1项：(最近365天净消费满¥5,000或订单不少于6笔)；"
        "累计成长值满8,000"
    )
    assert english == (
        "at least 1 of these 2: (net spend of at least ¥5,000 or at least 6 orders "
        "in the last 365 days); growth value of at least 8,000 in total"
    )


def test_three_levels_deep():
    rule = all_of(
        need("visits", "2"),
        any_of(GROWTH, all_of(SPEND, need("reviews", "1", LIFETIME))),
    )

    chinese, english = both(rule)

    assert chinese == (
        "最近365天到店不少于2次，且(累计成长值满8,000或"
        "(最近365天净消费满¥5,000且累计评价不少于1条))"
    )
    assert english == (
        "at least 2 visits in the last 365 days and (growth value of at least "
        "8,000 in total or (net spend of at least ¥5,000 in the last 365 days "
        "and at least 1 review in total))"
    )


def test_mixed_windows_named_per_item():
    chinese, english = both(all_of(SPEND, need("orders", "6", YEAR)))

    assert chinese == "最近365天净消费满¥5,000，且本自然年内订单不少于6笔"
    assert english == (
        "net spend of at least ¥5,000 in the last 365 days "
        "and at least 6 orders in the calendar year to date"
    )


def test_three_items_joined():
    rule = all_of(SPEND, ORDERS, need("referrals", "2"))

    chinese, english = both(rule)

    assert chinese == "最近365天净消费满¥5,000，订单不少于6笔，且推荐不少于2次"
    assert english == (
        "net spend of at least ¥5,000, at least 6 orders and at least 2 referrals "
        "in the last 365 days"
    )


def test_three_items_any_nested():
    rule = all_of(GROWTH, any_of(SPEND, ORDERS, need("visits", "9")))

    chinese, english = both(rule)

    assert chinese == (
        "累计成长值满8,000，且(最近365天净消费满¥5,000、订单不少于6笔或到店不少于9次)"
    )
    assert english == (
        "growth value of at least 8,000 in total and (net spend of at least "
        "¥5,000, at least 6 orders or at least 9 visits in the last 365 days)"
    )


def test_single_item_group_has_no_parentheses():
    chinese, english = both(any_of(all_of(SPEND), GROWTH))

    assert chinese == "最近365天净消费满¥5,000或累计成长值满8,000"
    assert english == (
        "net spend of at least ¥5,000 in the last 365 days "
        "or growth value of at least 8,000 in total"
    )


def test_single_group_unwrapped_at_top():
    chinese, english = both(all_of(any_of(SPEND, GROWTH)))

    assert chinese == "最近365天净消费满¥5,000或累计成长值满8,000"
    assert "(" not in english


def test_impossible_at_least_not_unwrapped():
    chinese, english = both(at_least(2, SPEND))

    assert chinese == "满足以下1项中的至少2项：最近365天净消费满¥5,000"
    assert english == (
        "at least 2 of these 1: net spend of at least ¥5,000 in the last 365 days"
    )


def test_empty_groups():
    assert both(all_of()) == ("无条件", "no requirements")
    assert both(any_of()) == ("无法满足的条件", "a rule that no member can meet")
    assert both(at_least(1)) == ("无法满足的条件", "a rule that no member can meet")


# Windows, money and counts

WINDOW_CASES = [
    (ROLLING_365, "最近365天订单不少于6笔", "at least 6 orders in the last 365 days"),
    (ROLLING_1, "最近1天订单不少于6笔", "at least 6 orders in the last 1 day"),
    (
        WindowSpec("rolling_days", 1095),
        "最近1,095天订单不少于6笔",
        "at least 6 orders in the last 1,095 days",
    ),
    (YEAR, "本自然年内订单不少于6笔", "at least 6 orders in the calendar year to date"),
    (LIFETIME, "累计订单不少于6笔", "at least 6 orders in total"),
]


@pytest.mark.parametrize(("window", "chinese", "english"), WINDOW_CASES)
def test_each_window(window, chinese, english):
    assert both(all_of(need("orders", "6", window))) == (chinese, english)


METRIC_CASES = [
    ("net_spend", "5000", "净消费满¥5,000", "net spend of at least ¥5,000"),
    ("net_spend", "4999.5", "净消费满¥4,999.50", "net spend of at least ¥4,999.50"),
    ("net_spend", "0.004", "净消费满¥0.01", "net spend of at least ¥0.01"),
    ("orders", "1", "订单不少于1笔", "at least 1 order"),
    ("orders", "12000", "订单不少于12,000笔", "at least 12,000 orders"),
    ("active_days", "1", "活跃天数不少于1天", "at least 1 active day"),
    ("active_days", "30", "活跃天数不少于30天", "at least 30 active days"),
    ("visits", "1", "到店不少于1次", "at least 1 visit"),
    ("reviews", "3", "评价不少于3条", "at least 3 reviews"),
    ("referrals", "1", "推荐不少于1次", "at least 1 referral"),
    ("growth_value", "99999", "成长值满99,999", "growth value of at least 99,999"),
    # A fractional target reads rounded up, never easier than it is.
    ("growth_value", "99999.5", "成长值满100,000", "growth value of at least 100,000"),
]


@pytest.mark.parametrize(("metric", "threshold", "chinese", "english"), METRIC_CASES)
def test_metric_formats(metric, threshold, chinese, english):
    rule = all_of(need(metric, threshold, LIFETIME))

    assert both(rule) == (f"累计{chinese}", f"{english} in total")


def test_money_uses_currency_setting(settings):
    settings.CRM_CURRENCY = "USD"

    assert render_group(all_of(SPEND), "en") == (
        "net spend of at least $5,000 in the last 365 days"
    )
    assert render_group(all_of(SPEND), "zh-hans") == "最近365天净消费满$5,000"


def test_unknown_metric_rejected():
    with pytest.raises(ValueError, match="bogus"):
        render_group(all_of(need("bogus", "1")), "en")


# Languages


def test_language_chosen_not_active():
    with translation.override("en"):
        chinese = render_group(all_of(SPEND), "zh-hans")
        assert translation.get_language() == "en"
    with translation.override("zh-hans"):
        english = render_group(all_of(SPEND), "en")
        assert translation.get_language() == "zh-hans"

    assert chinese == "最近365天净消费满¥5,000"
    assert english == "net spend of at least ¥5,000 in the last 365 days"


def test_unsupported_language_rejected():
    with pytest.raises(ValueError, match="Unsupported language 'fr'"):
        render_group(all_of(SPEND), "fr")


# Tiers and versions

BRONZE = TierRuleSet(1, "Bronze", 0, "#a0522d", entry=None, retention=None)
GOLD = TierRuleSet(
    3,
    "Gold",
    20,
    "#c9a227",
    entry=all_of(SPEND, ORDERS),
    retention=all_of(need("net_spend", "2000")),
)
PLATINUM = TierRuleSet(
    4, "Platinum", 30, "#5b6f8a", entry=any_of(SPEND, GROWTH), retention=None
)


def test_tier_entry_both_languages():
    assert render_tier(GOLD, "en") == (
        "Gold: net spend of at least ¥5,000 and at least 6 orders in the last 365 days"
    )
    assert render_tier(GOLD, "zh-hans") == (
        "Gold：最近365天净消费满¥5,000，且订单不少于6笔"
    )


def test_tier_retention():
    assert render_tier(GOLD, "en", retention=True) == (
        "Gold: net spend of at least ¥2,000 in the last 365 days"
    )
    assert render_tier(GOLD, "zh-hans", retention=True) == (
        "Gold：最近365天净消费满¥2,000"
    )


def test_tier_retention_falls_back_to_entry():
    # A tier without retention rules is kept by its entry rules.
    assert render_tier(PLATINUM, "en", retention=True) == render_tier(PLATINUM, "en")


def test_base_tier_every_member():
    assert render_tier(BRONZE, "en") == "Bronze: every member"
    assert render_tier(BRONZE, "zh-hans") == "Bronze：所有会员"
    assert render_tier(BRONZE, "en", retention=True) == "Bronze: every member"


def test_version_rows():
    ladder = Ladder(
        version_id=1,
        version_number=1,
        policy="reevaluate",
        effective_from=None,
        tiers=(BRONZE, GOLD, PLATINUM),
        kinds=KindCatalogue({}),
    )

    rows = render_version(ladder, "en")

    assert rows == [
        ("Bronze", "every member", ""),
        (
            "Gold",
            "net spend of at least ¥5,000 and at least 6 orders in the last 365 days",
            "net spend of at least ¥2,000 in the last 365 days",
        ),
        (
            "Platinum",
            "net spend of at least ¥5,000 in the last 365 days or "
            "growth value of at least 8,000 in total",
            "",
        ),
    ]
    assert render_version(ladder, "zh-hans")[1] == (
        "Gold",
        "最近365天净消费满¥5,000，且订单不少于6笔",
        "最近365天净消费满¥2,000",
    )


def test_version_loaded_from_database(tiers):
    publish_spec(standard_spec(tiers))

    rows = render_version(Ladder.load(as_of=AS_OF), "zh-hans")

    assert rows == [
        ("Bronze", "所有会员", ""),
        ("Silver", "最近365天净消费满¥1,000", ""),
        ("Gold", "最近365天净消费满¥5,000，且订单不少于6笔", ""),
        ("Platinum", "累计净消费满¥50,000或成长值满99,999", ""),
    ]


# Growth value weights

PURCHASE = ActivityKind(id=1, code="purchase", name="Purchase", role="purchase")
REFUND = ActivityKind(id=2, code="refund", name="Refund", role="refund")
VISIT = ActivityKind(id=3, code="visit", name="Visit", role="visit")
LIVE_STREAM = ActivityKind(id=9, code="live", name="Live stream", role="other")
TMALL = Channel(id=7, code="tmall", name="Tmall")


def weight(kind, *, event="0", unit="0", daily=None, window=None, channel=None):
    return GrowthWeight(
        kind=kind,
        channel=channel,
        points_per_event=Decimal(event),
        points_per_unit=Decimal(unit),
        daily_cap=None if daily is None else Decimal(daily),
        window_cap=None if window is None else Decimal(window),
    )


def test_weights_purchase_compact():
    weights = [weight(PURCHASE, event="10", unit="1.0000", daily="500.00")]

    assert render_weights(weights, "zh-hans") == (
        "每消费¥1得1成长值，每笔订单得10成长值，每日上限500成长值"
    )
    assert render_weights(weights, "en") == (
        "1 point per ¥1 spent, 10 points per order, at most 500 points a day"
    )


def test_weights_several_kinds():
    weights = [
        weight(PURCHASE, unit="0.5"),
        weight(REFUND, unit="0.5"),
        weight(VISIT, event="5", window="1000"),
    ]

    assert render_weights(weights, "zh-hans") == (
        "每消费¥1得0.5成长值；每退款¥1扣0.5成长值；"
        "每次到店得5成长值，每个考核窗口上限1,000成长值"
    )
    assert render_weights(weights, "en") == (
        "0.5 points per ¥1 spent; 0.5 points deducted per ¥1 refunded; "
        "5 points per visit, at most 1,000 points per requirement window"
    )


def test_weights_channel_and_other_channels():
    weights = [weight(PURCHASE, unit="1"), weight(PURCHASE, unit="2", channel=TMALL)]

    assert render_weights(weights, "en") == (
        "other channels: 1 point per ¥1 spent; Tmall: 2 points per ¥1 spent"
    )
    assert render_weights(weights, "zh-hans") == (
        "其他渠道：每消费¥1得1成长值；Tmall：每消费¥1得2成长值"
    )


def test_weights_custom_kind_by_name():
    weights = [weight(LIVE_STREAM, event="3", unit="1")]

    assert render_weights(weights, "en") == (
        "1 point per ¥1 of Live stream, 3 points per Live stream"
    )
    assert render_weights(weights, "zh-hans") == (
        "Live stream每¥1得1成长值，每次Live stream得3成长值"
    )


def test_weights_without_points_left_out():
    assert render_weights([weight(VISIT)], "en") == "no activity earns growth value"
    assert render_weights([], "zh-hans") == "所有活动均不计成长值"


# Nested logic through GroupRule.check

A = need("net_spend", "100")
B = need("orders", "1")
C = need("active_days", "1")
D = need("visits", "1")
E = need("reviews", "1", LIFETIME)


def metrics_for(values: dict[RequirementRule, bool]) -> dict[str, Decimal]:
    """Put each leaf's value at its threshold when True, just below when False."""
    return {
        leaf.spec.key: leaf.threshold if met else leaf.threshold - Decimal("0.01")
        for leaf, met in values.items()
    }


def truth_table(count: int):
    return list(itertools.product((False, True), repeat=count))


@pytest.mark.parametrize(("a", "b", "c"), truth_table(3))
def test_truth_any_of_all(a, b, c):
    rule = any_of(all_of(A, B), C)

    checked = rule.check(metrics_for({A: a, B: b, C: c}), AS_OF)

    both_ab = a and b
    assert checked["met"] is (both_ab or c)
    assert checked["items"][0]["met"] is both_ab
    assert checked["items"][1]["met"] is c


@pytest.mark.parametrize(("a", "b", "c", "d", "e"), truth_table(5))
def test_truth_at_least_of_groups(a, b, c, d, e):
    rule = at_least(2, A, any_of(B, C), all_of(D, E))

    checked = rule.check(metrics_for({A: a, B: b, C: c, D: d, E: e}), AS_OF)

    either_bc = b or c
    both_de = d and e
    assert checked["met"] is (sum([a, either_bc, both_de]) >= 2)
    assert checked["items"][1]["met"] is either_bc
    assert checked["items"][2]["met"] is both_de


@pytest.mark.parametrize(("a", "b", "c", "d", "e"), truth_table(5))
def test_truth_all_with_nested_at_least(a, b, c, d, e):
    rule = all_of(A, any_of(B, at_least(2, C, D, E)))

    checked = rule.check(metrics_for({A: a, B: b, C: c, D: d, E: e}), AS_OF)

    inner = sum([c, d, e]) >= 2
    assert checked["met"] is (a and (b or inner))
    assert checked["items"][1]["items"][1]["met"] is inner


@pytest.mark.parametrize(("a", "b", "c"), truth_table(3))
def test_truth_at_least_bounds(a, b, c):
    values = {A: a, B: b, C: c}
    held = sum([a, b, c])

    for count in (1, 2, 3, 4):
        checked = at_least(count, A, B, C).check(metrics_for(values), AS_OF)
        assert checked["met"] is (held >= count), count


def test_truth_empty_groups():
    assert all_of().check({}, AS_OF)["met"] is True
    assert any_of().check({}, AS_OF)["met"] is False
    assert at_least(1).check({}, AS_OF)["met"] is False
