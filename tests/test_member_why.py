"""The admin page that explains a member's tier as of any date."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import translation

from tests.conftest import local, make_member, record
from tiers.evaluation import explain_member
from tiers.explaining import activities_that_counted

pytestmark = pytest.mark.django_db


@pytest.fixture
def support(client):
    user = User.objects.create_user(
        "support", "s@example.com", "pw-12345-x", is_staff=True
    )
    user.user_permissions.add(Permission.objects.get(codename="view_member"))
    client.force_login(user)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


def test_why_page_shows_past_evaluation(support, ladder, store):
    member = make_member(store, "W1")
    record(member, store, "purchase", local(2024, 3, 1), "800", reference="OLD-1")
    record(member, store, "purchase", local(2024, 6, 1), "300", reference="NEW-1")

    response = support.get(
        reverse("admin:members_member_why", args=[member.pk]), {"as_of": "2024-04-30"}
    )

    text = response.content.decode()
    assert response.status_code == 200
    assert "OLD-1" in text
    assert "NEW-1" not in text  # after the chosen date
    assert "800" in text
    assert 'value="2024-04-30"' in text


def test_why_page_rejects_bad_date(support, ladder, store):
    member = make_member(store, "W2")

    response = support.get(
        reverse("admin:members_member_why", args=[member.pk]), {"as_of": "30/04/2024"}
    )

    assert "30/04/2024 is not a date; use YYYY-MM-DD." in response.content.decode()


def test_why_page_needs_view_permission(client, ladder, store):
    member = make_member(store, "W3")
    outsider = User.objects.create_user(
        "x", "x@example.com", "pw-12345-x", is_staff=True
    )
    client.force_login(outsider)

    response = client.get(reverse("admin:members_member_why", args=[member.pk]))

    assert response.status_code == 403


def test_counted_activities_follow_windows(ladder, store):
    member = make_member(store, "W4")
    old = record(member, store, "purchase", local(2022, 1, 5), "100")
    recent = record(member, store, "purchase", local(2024, 6, 1), "100")
    visit = record(member, store, "visit", local(2024, 6, 2))
    evaluation = explain_member(member, as_of=local(2024, 6, 30, 12))

    with translation.override("en"):
        counted = {
            row.activity.pk: row.metrics
            for row in activities_that_counted(member.pk, evaluation.explanation)
        }

    assert counted[recent.pk] == (
        "net spend (last 365 days)",
        "orders (last 365 days)",
        "net spend (lifetime)",
    )
    assert counted[old.pk] == ("net spend (lifetime)",)
    assert counted[visit.pk] == ()
