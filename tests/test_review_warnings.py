"""Review warnings: who is warned before a review, what they lack, the text."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext

from members.models import Activity
from tests.conftest import local, make_member, publish_spec, record, standard_spec
from tiers.evaluation import evaluate
from tiers.models import ReviewWarning, RuleVersion, TierOverride, Validity
from tiers.overrides import request_override
from tiers.publishing import publish
from tiers.rules import Need, any_of, build
from tiers.warnings import record_review_warnings, warning_text

pytestmark = pytest.mark.django_db

# Members in these tests reach Gold on 30 June 2024 at noon, so a yearly
# review falls on 30 June 2025 at noon.
REVIEW = local(2025, 6, 30, 12)
THIRTY_DAYS_BEFORE = REVIEW - dt.timedelta(days=30)


def yearly_gold_spec(tiers, retention=None):
    """Return the standard ladder with Gold reviewed 12 months after reaching it."""
    spec = standard_spec(tiers)
    gold = spec.tiers[2]
    gold.validity = Validity.MONTHS
    gold.validity_months = 12
    gold.retention = retention
    return spec


def publish_yearly_gold(tiers, retention=None):
    publish_spec(yearly_gold_spec(tiers, retention))


def reach_gold(store, external_id, first_order=None):
    """Place a member in Gold on 30 June 2024 with six orders of ¥1,000.

    The first order is on 25 June 2024 unless ``first_order`` moves it.
    """
    member = make_member(store, external_id)
    record(member, store, "purchase", first_order or local(2024, 6, 25), "1000")
    for day in range(26, 31):
        record(member, store, "purchase", local(2024, 6, day), "1000")
    evaluate([member.pk], as_of=local(2024, 6, 30, 12))
    return member


def at_risk_member(store, external_id="RISK"):
    """A Gold member whose ¥1,800 refund leaves ¥4,200 of the ¥5,000 needed."""
    member = reach_gold(store, external_id)
    record(member, store, "refund", local(2024, 12, 1), "-1800")
    return member


def test_warning_for_member_at_risk(tiers, store):
    publish_yearly_gold(tiers)
    member = at_risk_member(store)

    created = record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)

    assert created == 1
    warning = ReviewWarning.objects.get()
    assert warning.member == member
    assert warning.tier == tiers["gold"]
    assert warning.review_at == REVIEW
    assert warning.as_of == THIRTY_DAYS_BEFORE
    assert warning.shortfall["operator"] == "all"
    assert warning.shortfall["needed"] == 1
    (requirement,) = warning.shortfall["items"]
    assert requirement["metric"] == "net_spend"
    assert requirement["window"] == "rolling_days"
    assert requirement["days"] == 365
    assert Decimal(requirement["value"]) == Decimal("4200")
    assert Decimal(requirement["threshold"]) == Decimal("5000")


def test_warning_text_in_english(tiers, store):
    publish_yearly_gold(tiers)
    at_risk_member(store)
    record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)

    warning = ReviewWarning.objects.select_related("tier").get()

    assert warning_text(warning, "en") == (
        "Review on 30 June: ¥800 more net spend keeps Gold"
    )


def test_warning_text_in_chinese(tiers, store):
    publish_yearly_gold(tiers)
    at_risk_member(store)
    record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)

    warning = ReviewWarning.objects.select_related("tier").get()

    assert warning_text(warning, "zh-hans") == (
        "6月30日复核：还差净消费¥800，补足即可保级Gold"
    )


def test_text_joins_all_of_with_and(tiers, store):
    publish_yearly_gold(tiers)
    # The May order leaves the 365-day window by 31 May 2025, which leaves
    # five orders, and the refund leaves ¥4,200 of spend.
    member = reach_gold(store, "TWO", first_order=local(2024, 5, 20))
    record(member, store, "refund", local(2024, 12, 1), "-800")
    record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)

    warning = ReviewWarning.objects.select_related("tier").get()

    assert warning_text(warning, "en") == (
        "Review on 30 June: ¥800 more net spend and 1 more order keeps Gold"
    )


def test_text_joins_any_of_with_or(tiers, store):
    publish_yearly_gold(
        tiers, retention=any_of(Need("net_spend", 5000), Need("orders", 10))
    )
    at_risk_member(store)
    record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)

    warning = ReviewWarning.objects.select_related("tier").get()

    assert warning.shortfall["operator"] == "any"
    assert warning.shortfall["needed"] == 1
    assert warning_text(warning, "en") == (
        "Review on 30 June: ¥800 more net spend or 4 more orders keeps Gold"
    )


def test_text_rejects_unknown_language(tiers, store):
    publish_yearly_gold(tiers)
    at_risk_member(store)
    record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)
    warning = ReviewWarning.objects.get()

    with pytest.raises(ValueError, match="Unsupported language 'fr'"):
        warning_text(warning, "fr")


def test_safe_member_gets_none(tiers, store):
    publish_yearly_gold(tiers)
    reach_gold(store, "SAFE")

    created = record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)

    assert created == 0
    assert ReviewWarning.objects.count() == 0


def test_review_further_away_gets_none(tiers, store):
    publish_yearly_gold(tiers)
    at_risk_member(store)

    created = record_review_warnings(
        THIRTY_DAYS_BEFORE - dt.timedelta(seconds=1), days_ahead=30
    )

    assert created == 0
    assert ReviewWarning.objects.count() == 0


def test_review_already_due_gets_none(tiers, store):
    publish_yearly_gold(tiers)
    at_risk_member(store)

    created = record_review_warnings(REVIEW, days_ahead=30)

    assert created == 0


def test_days_ahead_defaults_to_setting(tiers, store, settings):
    settings.CRM_REVIEW_WARNING_DAYS = 10
    publish_yearly_gold(tiers)
    at_risk_member(store)

    assert record_review_warnings(THIRTY_DAYS_BEFORE) == 0
    assert record_review_warnings(REVIEW - dt.timedelta(days=10)) == 1


def test_rerun_adds_nothing(tiers, store):
    publish_yearly_gold(tiers)
    at_risk_member(store)
    record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)
    first = ReviewWarning.objects.get()

    created = record_review_warnings(
        THIRTY_DAYS_BEFORE + dt.timedelta(days=1), days_ahead=30
    )

    assert created == 0
    assert list(ReviewWarning.objects.all()) == [first]


def test_negative_days_ahead_rejected(tiers):
    publish_yearly_gold(tiers)

    with pytest.raises(ValueError, match="days_ahead=-1 is negative"):
        record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=-1)


def test_query_count_flat_in_members(tiers, store):
    publish_yearly_gold(tiers)
    at_risk_member(store, "R1")
    with CaptureQueriesContext(connection) as one_member:
        record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)
    ReviewWarning.objects.all().delete()
    for external_id in ("R2", "R3", "R4"):
        at_risk_member(store, external_id)
    reach_gold(store, "SAFE")

    with CaptureQueriesContext(connection) as five_members:
        created = record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)

    assert created == 4
    # Six queries load the ladder (version, groups, requirements, tier rules,
    # activity kinds, weights), then one each for the members due, their
    # chunk, their active overrides, the ledger aggregate and the INSERT.
    assert len(one_member.captured_queries) == 11
    assert len(five_members.captured_queries) == 11


# Overrides and publish policies that keep the tier at the review


def request_hold(member, tier, mode, until=None):
    """Request an override by a staff member on 1 January 2025."""
    staff = User.objects.create_user("staff", "staff@example.com", "pw-12345-x")
    return request_override(
        member,
        tier,
        mode,
        "Partner employee",
        staff,
        until=until,
        as_of=local(2025, 1, 1),
    )


def test_floor_keeping_tier_gets_none(tiers, store):
    publish_yearly_gold(tiers)
    member = at_risk_member(store)
    request_hold(member, tiers["gold"], TierOverride.Mode.FLOOR)

    created = record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)

    assert created == 0


def test_fixed_past_review_gets_none(tiers, store):
    publish_yearly_gold(tiers)
    member = at_risk_member(store)
    until = REVIEW + dt.timedelta(days=10)
    request_hold(member, tiers["gold"], TierOverride.Mode.FIXED, until=until)

    created = record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)

    assert created == 0


@pytest.mark.parametrize(
    ("tier", "mode", "until"),
    [
        ("gold", TierOverride.Mode.FIXED, REVIEW - dt.timedelta(days=1)),
        ("gold", TierOverride.Mode.FIXED, REVIEW),
        ("gold", TierOverride.Mode.FLOOR, REVIEW - dt.timedelta(days=1)),
        ("silver", TierOverride.Mode.FLOOR, None),
    ],
)
def test_override_not_keeping_tier_warns(tiers, store, tier, mode, until):
    publish_yearly_gold(tiers)
    member = at_risk_member(store)
    request_hold(member, tiers[tier], mode, until=until)

    created = record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)

    assert created == 1
    assert ReviewWarning.objects.get().member == member


def publish_new_activity_version(tiers):
    """Publish the same rules again from 15 January 2025, for new activity only.

    Every ledger row written so far is marked recorded when it occurred, so
    none of it counts as activity after the version took effect.
    """
    Activity.objects.update(recorded_at=F("occurred_at"))
    publish(
        build(yearly_gold_spec(tiers)),
        user=None,
        reason="test set-up",
        policy=RuleVersion.Policy.NEW_ACTIVITY,
        effective_from=local(2025, 1, 15),
        allow_past=True,
    )


def test_new_activity_policy_without_activity_gets_none(tiers, store):
    publish_yearly_gold(tiers)
    at_risk_member(store)
    publish_new_activity_version(tiers)

    created = record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)

    assert created == 0


def test_new_activity_policy_with_activity_warns(tiers, store):
    publish_yearly_gold(tiers)
    member = at_risk_member(store)
    publish_new_activity_version(tiers)
    visit = record(member, store, "visit", local(2025, 2, 1))
    Activity.objects.filter(pk=visit.pk).update(recorded_at=local(2025, 2, 1))

    created = record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)

    assert created == 1
    assert ReviewWarning.objects.get().member == member


def test_grandfather_policy_still_warns(tiers, store):
    publish_yearly_gold(tiers)
    member = at_risk_member(store)
    Activity.objects.update(recorded_at=F("occurred_at"))
    publish(
        build(yearly_gold_spec(tiers)),
        user=None,
        reason="test set-up",
        policy=RuleVersion.Policy.GRANDFATHER,
        effective_from=local(2025, 1, 15),
        allow_past=True,
    )

    created = record_review_warnings(THIRTY_DAYS_BEFORE, days_ahead=30)

    # Grandfathering lasts until the review, so the review itself judges
    # the member by the new rules.
    assert created == 1
    assert ReviewWarning.objects.get().member == member
