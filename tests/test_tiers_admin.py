"""Tier admin: requirements inline, ladder validation in plain words."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from tests.conftest import make_member
from tiers.evaluation import evaluate
from tiers.models import Requirement, TierChange
from tiers.validation import current_ladder, ladder_problems

pytestmark = pytest.mark.django_db


@pytest.fixture
def manager(client):
    user = User.objects.create_superuser("manager", "manager@example.com", "pw-12345-x")
    client.force_login(user)
    return client


def inline_data(tier, rows):
    """Build the tier change form's POST data with the given requirement rows."""
    data = {
        "name": tier.name,
        "rank": tier.rank,
        "colour": tier.colour,
        "description": "",
        "combine": tier.combine,
        "requirements-TOTAL_FORMS": str(len(rows)),
        "requirements-INITIAL_FORMS": str(sum(1 for row in rows if row.get("id"))),
        "requirements-MIN_NUM_FORMS": "0",
        "requirements-MAX_NUM_FORMS": "1000",
    }
    for index, row in enumerate(rows):
        for key, value in row.items():
            data[f"requirements-{index}-{key}"] = value
        data[f"requirements-{index}-tier"] = tier.pk
    return data


def test_easier_higher_tier_rejected_in_words(manager, ladder):
    gold = ladder["gold"]
    spend, orders = Requirement.objects.filter(tier=gold).order_by("pk")
    rows = [
        {
            "id": spend.pk,
            "metric": "net_spend",
            "window": "rolling_days",
            "window_days": "365",
            "threshold": "800",
        },
        {
            "id": orders.pk,
            "metric": "orders",
            "window": "rolling_days",
            "window_days": "365",
            "threshold": "6",
        },
    ]

    response = manager.post(
        reverse("admin:tiers_tier_change", args=[gold.pk]), inline_data(gold, rows)
    )

    assert response.status_code == 200
    text = response.content.decode()
    assert "Gold is easier to reach than Silver" in text
    assert "Raise Gold" in text
    spend.refresh_from_db()
    assert spend.threshold == 5000


def test_consistent_change_saved(manager, ladder):
    gold = ladder["gold"]
    spend, orders = Requirement.objects.filter(tier=gold).order_by("pk")
    rows = [
        {
            "id": spend.pk,
            "metric": "net_spend",
            "window": "rolling_days",
            "window_days": "365",
            "threshold": "6000",
        },
        {
            "id": orders.pk,
            "metric": "orders",
            "window": "rolling_days",
            "window_days": "365",
            "threshold": "6",
        },
    ]

    response = manager.post(
        reverse("admin:tiers_tier_change", args=[gold.pk]), inline_data(gold, rows)
    )

    assert response.status_code == 302
    spend.refresh_from_db()
    assert spend.threshold == 6000


def test_rolling_window_needs_days(manager, ladder):
    gold = ladder["gold"]
    rows = [
        {
            "metric": "orders",
            "window": "rolling_days",
            "window_days": "",
            "threshold": "6",
        },
    ]
    Requirement.objects.filter(tier=gold).delete()

    response = manager.post(
        reverse("admin:tiers_tier_change", args=[gold.pk]), inline_data(gold, rows)
    )

    assert response.status_code == 200
    assert "Enter the number of days" in response.content.decode()


def test_count_threshold_must_be_whole(manager, ladder):
    gold = ladder["gold"]
    spend, orders = Requirement.objects.filter(tier=gold).order_by("pk")
    rows = [
        {
            "id": spend.pk,
            "metric": "net_spend",
            "window": "rolling_days",
            "window_days": "365",
            "threshold": "5000",
        },
        {
            "id": orders.pk,
            "metric": "orders",
            "window": "rolling_days",
            "window_days": "365",
            "threshold": "6.5",
        },
    ]

    response = manager.post(
        reverse("admin:tiers_tier_change", args=[gold.pk]), inline_data(gold, rows)
    )

    assert response.status_code == 200
    assert "is a count; enter a whole number" in response.content.decode()


def test_tier_without_requirements_reported(ladder):
    Requirement.objects.filter(tier=ladder["silver"]).delete()

    problems = [p.message for p in ladder_problems(current_ladder())]

    assert any("Silver has no requirements" in p for p in problems)


def test_changelist_warns_about_ladder(manager, ladder):
    Requirement.objects.filter(tier=ladder["gold"], metric="net_spend").update(
        threshold=10
    )

    response = manager.get(reverse("admin:tiers_tier_changelist"))

    assert "Gold is easier to reach than Silver" in response.content.decode()


def test_tier_history_changelist_query_count(
    manager, ladder, store, django_assert_max_num_queries
):
    for number in range(30):
        make_member(store, f"H{number}")
    evaluate()
    assert TierChange.objects.count() == 30

    # session, user, count, rows (member and tiers joined), filter choices
    with django_assert_max_num_queries(8):
        response = manager.get(reverse("admin:tiers_tierchange_changelist"))

    assert response.status_code == 200
