"""The scheduled expiry job and the warnings sent before a grant expires.

Alice's Silver welcome coupon is valid 30 days, and her free shipping never
expires. Warnings go out CRM_BENEFIT_EXPIRY_WARNING_DAYS (default 7) before.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from benefits.expiry import expire_grants, warn_expiring_grants
from benefits.issuing import issue_for_tier_changes
from benefits.models import Grant
from benefits.redemption import redeem
from tests.test_benefits_support import create_catalogue, member_in_silver

Status = Grant.Status


@pytest.fixture
def grants(ladder, store) -> dict[str, Grant]:
    create_catalogue(ladder)
    alice = member_in_silver(store, "A-1", timezone.now(), name="Alice")
    issue_for_tier_changes()
    issued = Grant.objects.filter(member=alice).select_related("benefit")
    return {grant.benefit.name: grant for grant in issued}


@pytest.fixture
def coupon(grants) -> Grant:
    return grants["Welcome coupon ¥50"]


@pytest.fixture
def warnings_sent(monkeypatch) -> list[tuple[int, str, dict, str]]:
    calls: list[tuple[int, str, dict, str]] = []
    monkeypatch.setattr(
        "benefits.expiry.notify",
        lambda member_id, topic, params, key: calls.append(
            (member_id, topic, params, key)
        ),
    )
    return calls


def test_expiry_marks_only_past_grants(grants, coupon):
    before = coupon.expires_at - dt.timedelta(seconds=1)
    assert expire_grants(now=before) == {"expired": 0}

    counts = expire_grants(now=coupon.expires_at)

    assert counts == {"expired": 1}
    coupon.refresh_from_db()
    assert coupon.status == Status.EXPIRED
    shipping = grants["Free shipping"]
    shipping.refresh_from_db()
    assert shipping.status == Status.ISSUED


def test_expiry_twice_changes_nothing(coupon):
    expire_grants(now=coupon.expires_at)

    assert expire_grants(now=coupon.expires_at) == {"expired": 0}


def test_expiry_keeps_redeemed(coupon, store):
    redeem(code=coupon.code, channel=store, reference="ORDER-1")

    assert expire_grants(now=coupon.expires_at) == {"expired": 0}

    coupon.refresh_from_db()
    assert coupon.status == Status.REDEEMED


def test_warning_sent_once_in_window(coupon, warnings_sent):
    eight_days_before = coupon.expires_at - dt.timedelta(days=8)
    assert warn_expiring_grants(now=eight_days_before) == {"warned": 0}

    six_days_before = coupon.expires_at - dt.timedelta(days=6)
    counts = warn_expiring_grants(now=six_days_before)

    assert counts == {"warned": 1}
    ((member_id, topic, params, key),) = warnings_sent
    assert member_id == coupon.member_id
    assert topic == "benefit_expiring"
    assert key == f"grant-expiring:{coupon.pk}"
    assert params == {
        "grant_id": coupon.pk,
        "benefit": "Welcome coupon ¥50",
        "kind": "coupon",
        "code": coupon.code,
        "expires_at": coupon.expires_at.isoformat(),
    }
    coupon.refresh_from_db()
    assert coupon.expiry_warned_at == six_days_before
    assert warn_expiring_grants(now=six_days_before) == {"warned": 0}
    assert len(warnings_sent) == 1


def test_warning_window_follows_setting(coupon, warnings_sent, settings):
    settings.CRM_BENEFIT_EXPIRY_WARNING_DAYS = 10

    counts = warn_expiring_grants(now=coupon.expires_at - dt.timedelta(days=9))

    assert counts == {"warned": 1}


def test_no_warning_for_redeemed(coupon, store, warnings_sent):
    redeem(code=coupon.code, channel=store, reference="ORDER-1")

    counts = warn_expiring_grants(now=coupon.expires_at - dt.timedelta(days=1))

    assert counts == {"warned": 0}
    assert warnings_sent == []
