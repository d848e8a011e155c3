"""Member outlooks: progress to the next tier, the pace projection, the risk
at the coming review, and membership of the work queues at their boundaries.

Every figure is worked out by hand in the test that checks it. The moment is
AS_OF, 1 March 2025 at noon in Shanghai, and the pace window is the default
90 days (2 December 2024 to 1 March 2025).

Personas: Amy, Ben and Cai are Bronze members working towards Silver; Sara
and Tom hold Silver with a review ahead.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone, translation

from members.models import Member, OutboxMessage
from members.notifications import render
from tests.conftest import local, make_member, publish_spec, record
from tiers import outlook
from tiers.models import MemberOutlook, RuleGroup, TierOverride, Validity
from tiers.outlook import (
    Status,
    combine_dates,
    combine_percents,
    nudge_params,
    refresh_outlooks,
)
from tiers.rules import Need, TierSpec, VersionSpec, all_of, any_of, at_least

pytestmark = pytest.mark.django_db

AS_OF = local(2025, 3, 1, 12)
TODAY = dt.date(2025, 3, 1)


def days_before(days: int) -> dt.datetime:
    return AS_OF - dt.timedelta(days=days)


def publish_silver(tiers, entry, retention=None, **rule) -> None:
    """Publish Bronze (base), Silver with ``entry`` and Gold out of reach."""
    publish_spec(
        VersionSpec(
            tiers=[
                TierSpec(tiers["bronze"]),
                TierSpec(tiers["silver"], entry, retention, **rule),
                TierSpec(
                    tiers["gold"], all_of(Need("net_spend", 999999, window="lifetime"))
                ),
            ]
        )
    )


def stored(member: Member) -> MemberOutlook:
    return MemberOutlook.objects.get(member=member)


def leaf(node: dict, index: int = 0) -> dict:
    return node["rule"]["items"][index]


# Progress and projection per window kind


def test_lifetime_window_projects_linearly(tiers, store):
    publish_silver(tiers, all_of(Need("net_spend", 1000, window="lifetime")))
    amy = make_member(store, "AMY")
    record(amy, store, "purchase", days_before(200), "100")
    record(amy, store, "purchase", days_before(10), "300")

    refresh_outlooks([amy.pk], as_of=AS_OF)

    row = stored(amy)
    assert row.tier == tiers["bronze"]
    assert row.next_tier == tiers["silver"]
    # 400 of 1,000.
    assert row.progress == 40
    # ¥300 in 90 days is ¥3.33 a day; ¥600 more takes 600 * 90 / 300 = 180 days.
    assert row.projected_on == TODAY + dt.timedelta(days=180)
    assert row.projected_on == dt.date(2025, 8, 28)
    requirement = leaf(row.explanation["next"])
    assert Decimal(requirement["value"]) == 400
    assert Decimal(requirement["recent"]) == 300
    assert requirement["status"] == Status.PROJECTED
    assert row.explanation["pace_days"] == 90
    assert row.at_risk is False
    assert row.retention_progress is None
    assert row.computed_at == AS_OF


def test_calendar_year_window_projects_within_the_year(tiers, store):
    publish_silver(tiers, all_of(Need("net_spend", 1000, window="year_to_date")))
    amy = make_member(store, "AMY")
    # Last year's purchase counts in the pace but not in the year's value.
    record(amy, store, "purchase", local(2024, 12, 15, 12), "150")
    record(amy, store, "purchase", local(2025, 1, 10, 12), "200")
    record(amy, store, "purchase", local(2025, 2, 20, 12), "100")
    ben = make_member(store, "BEN")
    record(ben, store, "purchase", local(2025, 1, 10, 12), "90")

    refresh_outlooks([amy.pk, ben.pk], as_of=AS_OF)

    amy_row = stored(amy)
    assert amy_row.progress == 30
    # ¥450 in 90 days is ¥5 a day; ¥700 more takes 140 days, before 31 December.
    assert amy_row.projected_on == dt.date(2025, 7, 19)
    ben_row = stored(ben)
    assert ben_row.progress == 9
    # ¥1 a day needs 910 days, long after this year's window closes.
    assert ben_row.projected_on is None
    assert leaf(ben_row.explanation["next"])["status"] == Status.SHORT_THIS_YEAR


def test_rolling_window_counts_activity_leaving_it(tiers, store):
    publish_silver(tiers, all_of(Need("net_spend", 1000, days=365)))
    amy = make_member(store, "AMY")
    record(amy, store, "purchase", days_before(200), "300")
    record(amy, store, "purchase", days_before(10), "300")
    ben = make_member(store, "BEN")
    record(ben, store, "purchase", days_before(200), "600")
    record(ben, store, "purchase", days_before(10), "200")

    refresh_outlooks([amy.pk, ben.pk], as_of=AS_OF)

    amy_row = stored(amy)
    assert amy_row.progress == 60
    # Net rate 300/90 - 600/365 = 1.6895 a day; ¥400 more takes 236.8 days.
    assert amy_row.projected_on == TODAY + dt.timedelta(days=237)
    ben_row = stored(ben)
    assert ben_row.progress == 80
    # ¥200 in 90 days fills a 365-day window with at most ¥811, never ¥1,000,
    # although the ¥200 alone would close the gap in 90 days.
    assert ben_row.projected_on is None
    assert leaf(ben_row.explanation["next"])["status"] == Status.BELOW_WINDOW


def test_member_without_recent_activity_has_no_date(tiers, store):
    publish_silver(tiers, all_of(Need("net_spend", 1000, window="lifetime")))
    cai = make_member(store, "CAI")
    record(cai, store, "purchase", days_before(200), "500")

    refresh_outlooks([cai.pk], as_of=AS_OF)

    row = stored(cai)
    assert row.progress == 50
    assert row.projected_on is None
    assert leaf(row.explanation["next"])["status"] == Status.NO_PACE


def test_met_requirement_is_dated_today(tiers, store):
    publish_silver(
        tiers,
        all_of(
            Need("net_spend", 100, window="lifetime"),
            Need("orders", 4, window="lifetime"),
        ),
    )
    amy = make_member(store, "AMY")
    record(amy, store, "purchase", days_before(10), "300")
    record(amy, store, "purchase", days_before(5), "300")

    refresh_outlooks([amy.pk], as_of=AS_OF)

    row = stored(amy)
    spend, orders = row.explanation["next"]["rule"]["items"]
    assert spend["status"] == Status.MET
    assert spend["on"] == "2025-03-01"
    assert spend["percent"] == 100
    # 2 of 4 orders at 2 in 90 days: 90 more days; "all of" takes the later.
    assert orders["on"] == "2025-05-30"
    assert row.projected_on == dt.date(2025, 5, 30)
    assert row.progress == 50


# Combining a group


@pytest.mark.parametrize(
    ("operator", "at_least", "percents", "expected"),
    [
        (RuleGroup.Operator.ALL, None, [80, 60, 0], 0),
        (RuleGroup.Operator.ANY, None, [80, 60, 0], 80),
        (RuleGroup.Operator.AT_LEAST, 2, [60, 80, 0], 60),
        (RuleGroup.Operator.AT_LEAST, 3, [60, 80, 0], 0),
        # More needed than there are items: never met.
        (RuleGroup.Operator.AT_LEAST, 4, [100, 100, 100], 0),
        (RuleGroup.Operator.ALL, None, [], 100),
        (RuleGroup.Operator.ANY, None, [], 0),
    ],
)
def test_group_progress_combines_items(operator, at_least, percents, expected):
    assert combine_percents(operator, at_least, percents) == expected


@pytest.mark.parametrize(
    ("operator", "at_least", "dates", "expected"),
    [
        (RuleGroup.Operator.ALL, None, [5, 20], 20),
        (RuleGroup.Operator.ALL, None, [5, None], None),
        (RuleGroup.Operator.ANY, None, [None, 20, 5], 5),
        (RuleGroup.Operator.ANY, None, [None, None], None),
        (RuleGroup.Operator.AT_LEAST, 2, [20, None, 5], 20),
        (RuleGroup.Operator.AT_LEAST, 2, [20, None, None], None),
        (RuleGroup.Operator.ALL, None, [], 0),
    ],
)
def test_group_date_combines_items(operator, at_least, dates, expected):
    days = [None if d is None else TODAY + dt.timedelta(days=d) for d in dates]
    result = combine_dates(operator, at_least, days, TODAY)
    assert result == (None if expected is None else TODAY + dt.timedelta(expected))


def test_at_least_group_through_refresh(tiers, store):
    publish_silver(
        tiers,
        at_least(
            2,
            Need("orders", 10, window="lifetime"),
            Need("net_spend", 1000, window="lifetime"),
            Need("visits", 5, window="lifetime"),
        ),
    )
    amy = make_member(store, "AMY")
    record(amy, store, "purchase", days_before(200), "300")
    for day in range(5):
        record(amy, store, "purchase", days_before(10 + day), "100")

    refresh_outlooks([amy.pk], as_of=AS_OF)

    row = stored(amy)
    orders, spend, visits = row.explanation["next"]["rule"]["items"]
    # 6 of 10 orders (60 %), 5 in 90 days: 4 more take 72 days.
    assert (orders["percent"], orders["on"]) == (60, "2025-05-12")
    # ¥800 of ¥1,000 (80 %), ¥500 in 90 days: ¥200 more take 36 days.
    assert (spend["percent"], spend["on"]) == (80, "2025-04-06")
    assert (visits["percent"], visits["on"]) == (0, None)
    # The second largest share and the second earliest date.
    assert row.progress == 60
    assert row.projected_on == dt.date(2025, 5, 12)


def test_top_tier_has_no_next_tier(tiers, store):
    publish_silver(tiers, any_of(Need("net_spend", 100, window="lifetime")))
    gold = make_member(store, "GOLD")
    gold.tier = tiers["gold"]
    gold.save()
    record(gold, store, "purchase", days_before(3), "999999")

    refresh_outlooks([gold.pk], as_of=AS_OF)

    row = stored(gold)
    assert row.tier == tiers["gold"]
    assert row.next_tier is None
    assert row.progress == 0
    assert row.projected_on is None
    assert row.retention_progress == 100


# Risk at the review


@pytest.fixture
def reviewed_silver(tiers):
    """Silver is reviewed yearly. Its entry needs ¥5,000 within 30 days,
    which no member here meets, and it is kept with ¥1,000 of spend in the
    calendar year."""
    publish_silver(
        tiers,
        all_of(Need("net_spend", 5000, days=30)),
        all_of(Need("net_spend", 1000, window="year_to_date")),
        validity=Validity.MONTHS,
        validity_months=12,
    )
    return tiers


def silver_member(tiers, store, external_id: str, review_at: dt.datetime) -> Member:
    """A Silver member with ¥400 this year and ¥450 in the pace window."""
    member = make_member(store, external_id)
    member.tier = tiers["silver"]
    member.tier_since = days_before(100)
    member.review_at = review_at
    member.save()
    record(member, store, "purchase", local(2024, 12, 10, 12), "50")
    record(member, store, "purchase", local(2025, 1, 5, 12), "100")
    record(member, store, "purchase", local(2025, 2, 1, 12), "300")
    return member


def test_risk_at_review_boundary(reviewed_silver, store):
    # A review at midnight judges the day before. At ¥5 a day the year's
    # spend reaches 400 + 5 * 120 = 1,000 at the end of 29 June, 120 days on.
    sara = silver_member(reviewed_silver, store, "SARA", local(2025, 6, 30))
    tom = silver_member(reviewed_silver, store, "TOM", local(2025, 6, 29))

    refresh_outlooks([sara.pk, tom.pk], as_of=AS_OF)

    sara_row = stored(sara)
    assert sara_row.tier == reviewed_silver["silver"]
    assert sara_row.review_at == local(2025, 6, 30)
    assert sara_row.at_risk is False
    assert sara_row.retention_progress == 40
    review = sara_row.explanation["review"]
    assert review["days_ahead"] == 120
    assert Decimal(leaf(review)["value"]) == 1000
    assert review["kept"] is True

    tom_row = stored(tom)
    assert tom_row.at_risk is True
    assert tom_row.explanation["review"]["days_ahead"] == 119
    # 400 + 5 * 119 = 995, so ¥5 is missing at the review.
    assert Decimal(leaf(tom_row.explanation["review"])["value"]) == 995
    with translation.override("en"):
        missing = outlook.missing_text(tom_row.explanation["review"]["rule"])
    assert missing == "¥5 more net spend"


def test_floor_override_keeps_member_out_of_risk(reviewed_silver, store):
    tom = silver_member(reviewed_silver, store, "TOM", local(2025, 6, 29))
    TierOverride.objects.create(
        member=tom,
        tier=reviewed_silver["silver"],
        mode=TierOverride.Mode.FLOOR,
        reason="Flagship store opening",
        requested_at=days_before(30),
        status=TierOverride.Status.ACTIVE,
    )

    refresh_outlooks([tom.pk], as_of=AS_OF)

    row = stored(tom)
    assert row.at_risk is False
    assert row.explanation["review"]["kept_by_override"] is True


def test_member_in_grace_is_judged_at_grace_end(reviewed_silver, store):
    publish_silver(
        reviewed_silver,
        all_of(Need("net_spend", 5000, days=30)),
        all_of(Need("net_spend", 1000, window="year_to_date")),
        validity=Validity.MONTHS,
        validity_months=12,
        grace_days=30,
    )
    tom = silver_member(reviewed_silver, store, "TOM", local(2025, 2, 20))
    tom.grace_until = local(2025, 3, 22)
    tom.save()

    refresh_outlooks([tom.pk], as_of=AS_OF)

    row = stored(tom)
    assert row.review_at == local(2025, 3, 22)
    assert row.at_risk is True
    assert row.explanation["review"]["in_grace"] is True


# Refreshing


def test_merged_members_get_no_outlook(tiers, store):
    publish_silver(tiers, all_of(Need("net_spend", 1000, window="lifetime")))
    amy = make_member(store, "AMY")
    old = make_member(store, "OLD")
    refresh_outlooks(as_of=AS_OF)
    assert MemberOutlook.objects.filter(member=old).exists()

    old.merged_into = amy
    old.save()
    written = refresh_outlooks(as_of=AS_OF)

    assert written == 1
    assert MemberOutlook.objects.filter(member=amy).exists()
    assert not MemberOutlook.objects.filter(member=old).exists()


def test_refresh_again_updates_rows(tiers, store):
    publish_silver(tiers, all_of(Need("net_spend", 1000, window="lifetime")))
    amy = make_member(store, "AMY")
    record(amy, store, "purchase", days_before(10), "300")
    refresh_outlooks(as_of=AS_OF)

    record(amy, store, "purchase", days_before(5), "500")
    refresh_outlooks(as_of=AS_OF)

    assert MemberOutlook.objects.count() == 1
    assert stored(amy).progress == 80


def test_refresh_without_published_rules_writes_nothing(tiers, store):
    make_member(store, "AMY")

    assert refresh_outlooks(as_of=AS_OF) == 0
    assert not MemberOutlook.objects.exists()


def test_refresh_rejects_naive_moment(tiers):
    with pytest.raises(ValueError, match="aware"):
        refresh_outlooks(as_of=dt.datetime(2025, 3, 1))  # noqa: DTZ001


def test_refresh_query_count_per_chunk(
    reviewed_silver, store, django_assert_num_queries
):
    for number in range(4):
        member = make_member(store, f"M-{number}")
        record(member, store, "purchase", days_before(5), "100")
    sara = silver_member(reviewed_silver, store, "SARA", local(2025, 6, 30))
    tom = silver_member(reviewed_silver, store, "TOM", local(2025, 6, 29))
    refresh_outlooks(as_of=AS_OF)

    # Six queries load the rules (version, groups, requirements, tier rules,
    # activity kinds, weights). Each chunk of two members costs five:
    # - the members, the ledger aggregate and the active overrides
    #   (iter_evaluations),
    # - the pace aggregate,
    # - one upsert.
    # The chunk with Sara and Tom, who have review dates, adds the overrides
    # that may keep their tier. One more member query finds no more members,
    # and one DELETE removes the outlooks of merged members.
    with django_assert_num_queries(6 + 3 * 5 + 1 + 1 + 1):
        assert refresh_outlooks(as_of=AS_OF, chunk_size=2) == 6
    assert stored(sara).at_risk is False
    assert stored(tom).at_risk is True

    # Given ids, the chunks are read by id and end without an extra query.
    with django_assert_num_queries(6 + 5 + 1 + 1):
        assert refresh_outlooks([sara.pk, tom.pk], as_of=AS_OF, chunk_size=2) == 2


# Queue membership at the boundaries


def queue_members(client, **params) -> set[int]:
    response = client.get(reverse("admin:tiers_memberoutlook_changelist"), params)
    assert response.status_code == 200
    return {row.member_id for row in response.context["cl"].result_list}


def test_near_promotion_share_boundary(tiers, store, admin_client, settings):
    settings.CRM_NEAR_PROMOTION_PERCENT = 80
    publish_silver(tiers, all_of(Need("net_spend", 1000, window="lifetime")))
    spends = {"AT-80": "800", "AT-79": "799.99", "AT-99": "999.99", "MET": "1000"}
    members = {}
    for external_id, amount in spends.items():
        members[external_id] = make_member(store, external_id)
        record(members[external_id], store, "purchase", days_before(3), amount)
    # Refreshed as of now, because the queue filters work on the current time.
    refresh_outlooks()

    assert stored(members["AT-80"]).progress == 80
    assert stored(members["AT-79"]).progress == 79
    default_queue = queue_members(admin_client)
    assert members["AT-80"].pk in default_queue
    assert members["AT-99"].pk in default_queue
    assert members["AT-79"].pk not in default_queue
    # A member who meets the rules already is promoted by the next evaluation.
    assert members["MET"].pk not in default_queue
    assert members["AT-79"].pk in queue_members(admin_client, share="70")
    assert members["AT-80"].pk not in queue_members(admin_client, share="90")


def test_at_risk_review_within_boundary(reviewed_silver, store, admin_client):
    now = timezone.now()
    inside = silver_member(
        reviewed_silver, store, "IN", now + dt.timedelta(days=30, minutes=-5)
    )
    outside = silver_member(
        reviewed_silver, store, "OUT", now + dt.timedelta(days=30, minutes=5)
    )
    refresh_outlooks([inside.pk, outside.pk])
    # Both lack far more than a month of pace.
    assert stored(inside).at_risk is True
    assert stored(outside).at_risk is True

    within = queue_members(admin_client, queue="at_risk", review_within="30")

    assert inside.pk in within
    assert outside.pk not in within
    assert outside.pk in queue_members(admin_client, queue="at_risk")


# Reminders


def test_nudge_text_names_missing_and_date(tiers, store):
    publish_silver(tiers, all_of(Need("net_spend", 1000, window="lifetime")))
    amy = make_member(store, "AMY")
    record(amy, store, "purchase", days_before(200), "100")
    record(amy, store, "purchase", days_before(10), "300")
    refresh_outlooks([amy.pk], as_of=AS_OF)

    params = nudge_params(stored(amy))
    message = render(OutboxMessage.Topic.NUDGE, params, "en")

    assert params is not None
    assert params["goal"] == "reach"
    assert message.subject == "You are close to Silver"
    assert message.body == (
        "You need ¥600 more net spend to reach Silver. "
        "At your pace you get there by 28 Aug 2025."
    )


def test_nudge_text_for_member_at_risk(reviewed_silver, store):
    tom = silver_member(reviewed_silver, store, "TOM", local(2025, 6, 29))
    refresh_outlooks([tom.pk], as_of=AS_OF)

    params = nudge_params(stored(tom))
    message = render(OutboxMessage.Topic.NUDGE, params, "en")

    assert params is not None
    assert params["goal"] == "keep"
    assert message.subject == "Keep your Silver tier"
    assert message.body == (
        "At your current pace you would still need ¥5 more net spend at your "
        "review on 29 Jun 2025 to keep Silver."
    )


def test_no_nudge_without_shortfall(tiers, store):
    publish_silver(tiers, all_of(Need("net_spend", 100, window="lifetime")))
    amy = make_member(store, "AMY")
    record(amy, store, "purchase", days_before(3), "999999")
    refresh_outlooks([amy.pk], as_of=AS_OF)

    assert stored(amy).tier == tiers["gold"]
    assert nudge_params(stored(amy)) is None


def test_nudges_once_a_day(tiers, store, settings):
    settings.CRM_NOTIFICATION_BACKENDS = ["in_app"]
    publish_silver(tiers, all_of(Need("net_spend", 1000, window="lifetime")))
    amy = make_member(store, "AMY")
    record(amy, store, "purchase", days_before(10), "300")
    top = make_member(store, "TOP")
    record(top, store, "purchase", days_before(3), "999999")
    newcomer = make_member(store, "NEW")
    refresh_outlooks([amy.pk, top.pk], as_of=AS_OF)

    first = outlook.send_nudges([amy.pk, top.pk, newcomer.pk], TODAY)
    again = outlook.send_nudges([amy.pk], TODAY)
    next_day = outlook.send_nudges([amy.pk], TODAY + dt.timedelta(days=1))

    assert (first.sent, first.repeated, first.skipped) == (1, 0, 2)
    assert (again.sent, again.repeated, again.skipped) == (0, 1, 0)
    assert next_day.sent == 1
    keys = set(OutboxMessage.objects.values_list("key", flat=True))
    assert keys == {f"nudge:{amy.pk}:2025-03-01", f"nudge:{amy.pk}:2025-03-02"}
