"""Deleting activities in the admin re-evaluates their members at once.

Personas: staff is a superuser working in English. Bob and Carol are Silver
members, each with one purchase of ¥1,200 made three days ago. Without it,
the rules give Bronze.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from members.models import Activity, Member
from tests.conftest import make_member, record
from tiers.evaluation import evaluate
from tiers.models import TierChange

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> Client:
    user = User.objects.create_superuser("staff", "staff@example.com", "pw-12345-x")
    client = Client(headers={"accept-language": "en"})
    client.force_login(user)
    return client


def silver_member(store, external_id: str, name: str) -> Member:
    member = make_member(store, external_id, name=name)
    record(member, store, "purchase", timezone.now() - dt.timedelta(days=3), "1200")
    evaluate([member.pk])
    member.refresh_from_db()
    assert member.tier.name == "Silver"
    return member


@pytest.fixture
def bob(ladder, store) -> Member:
    return silver_member(store, "B-1", "Bob Li")


@pytest.fixture
def carol(ladder, store) -> Member:
    return silver_member(store, "C-1", "Carol Chen")


def tier_of(member: Member) -> str:
    member.refresh_from_db()
    return member.tier.name


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def delete_one(client: Client, activity: Activity):
    url = reverse("admin:members_activity_delete", args=[activity.pk])
    return client.post(url, {"post": "yes"}, follow=True)


def delete_selected(client: Client, activities: list[Activity]):
    data = {
        "action": "delete_selected",
        "_selected_action": [str(activity.pk) for activity in activities],
        "post": "yes",
    }
    url = reverse("admin:members_activity_changelist")
    return client.post(url, data, follow=True)


def test_delete_demotes_member(staff, bob):
    purchase = Activity.objects.get(member=bob)

    response = delete_one(staff, purchase)

    assert response.status_code == 200
    assert not Activity.objects.filter(pk=purchase.pk).exists()
    assert tier_of(bob) == "Bronze"
    drop = TierChange.objects.filter(member=bob).first()
    assert drop.reason == TierChange.Reason.DEMOTION
    assert "Bob Li was demoted to Bronze." in messages_of(response)


def test_bulk_delete_demotes_each_member(staff, bob, carol):
    activities = list(Activity.objects.filter(member__in=[bob, carol]))

    response = delete_selected(staff, activities)

    assert response.status_code == 200
    assert not Activity.objects.filter(member__in=[bob, carol]).exists()
    assert tier_of(bob) == "Bronze"
    assert tier_of(carol) == "Bronze"
    messages = messages_of(response)
    assert "Bob Li was demoted to Bronze." in messages
    assert "Carol Chen was demoted to Bronze." in messages


def test_bulk_delete_leaves_other_members(staff, bob, carol):
    response = delete_selected(staff, list(Activity.objects.filter(member=bob)))

    assert response.status_code == 200
    assert tier_of(bob) == "Bronze"
    assert tier_of(carol) == "Silver"
    assert not TierChange.objects.filter(
        member=carol, reason=TierChange.Reason.DEMOTION
    ).exists()


def bulk_delete_queries(client: Client, store, count: int) -> int:
    members = [
        silver_member(store, f"M-{count}-{number}", f"Member {number}")
        for number in range(count)
    ]
    activities = list(Activity.objects.filter(member__in=members))
    with CaptureQueriesContext(connection) as captured:
        delete_selected(client, activities)
    assert all(tier_of(member) == "Bronze" for member in members)
    return len(captured)


def test_bulk_delete_queries_flat(staff, ladder, store):
    # The evaluation of the members is one set-based call, so deleting the
    # activities of six members costs what deleting those of two costs.
    two = bulk_delete_queries(staff, store, 2)
    six = bulk_delete_queries(staff, store, 6)

    assert six == two


def test_delete_without_published_rules_warns(staff, store):
    member = make_member(store, "N-1", name="Nina Zhao")
    purchase = record(member, store, "purchase", timezone.now(), "100")

    response = delete_one(staff, purchase)

    assert not Activity.objects.filter(pk=purchase.pk).exists()
    assert any(
        message.startswith("The activity was deleted, but tiers were not evaluated:")
        for message in messages_of(response)
    )
