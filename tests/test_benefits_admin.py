"""The benefits admin: grants list, approval queue and the actions on grants.

Mei is a superuser. Alice is Silver and the Gold members are numbered. In the
queue tests, Alice's welcome coupon needs approval.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from benefits.issuing import issue_for_tier_changes
from benefits.models import Benefit, Grant
from members.models import Member
from tests.test_benefits_support import (
    create_catalogue,
    member_in_gold,
    member_in_silver,
)

Status = Grant.Status
GRANTS = "admin:benefits_grant_changelist"
QUEUE = "admin:benefits_grantawaitingapproval_changelist"


@pytest.fixture
def catalogue(ladder):
    return create_catalogue(ladder)


@pytest.fixture
def mei(db) -> User:
    return User.objects.create_superuser("mei", "mei@example.com", "pw-12345-x")


@pytest.fixture
def staff(mei) -> Client:
    client = Client(headers={"accept-language": "en"})
    client.force_login(mei)
    return client


@pytest.fixture
def alice(ladder, store, catalogue) -> Member:
    member = member_in_silver(store, "A-1", timezone.now(), name="Alice")
    issue_for_tier_changes()
    return member


@pytest.fixture
def waiting(ladder, store, catalogue) -> Grant:
    """Alice's welcome coupon, waiting for approval."""
    Benefit.objects.filter(pk=catalogue["welcome_coupon"].pk).update(
        approval_required=True
    )
    alice = member_in_silver(store, "A-1", timezone.now(), name="Alice")
    issue_for_tier_changes()
    return Grant.objects.get(member=alice, benefit=catalogue["welcome_coupon"])


def action_data(action: str, grant: Grant, reason: str = "") -> dict:
    return {
        "action": action,
        "_selected_action": [grant.pk],
        "index": 0,
        "reason": reason,
    }


def test_grants_changelist_query_count(
    staff, ladder, store, catalogue, django_assert_num_queries
):
    for number in range(3):
        member_in_gold(store, f"B-{number}", timezone.now())
    issue_for_tier_changes()
    url = reverse(GRANTS)
    staff.get(url)

    # Session and user (2), the tier and benefit filter choices (2), the
    # filtered and total counts (2), the page of rows joined with member,
    # benefit and tier (1), and the date hierarchy's range and days (2).
    with django_assert_num_queries(9):
        response = staff.get(url)
    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == 6

    for number in range(3, 8):
        member_in_gold(store, f"B-{number}", timezone.now())
    issue_for_tier_changes()

    with django_assert_num_queries(9):
        response = staff.get(url)
    assert len(response.context["cl"].result_list) == 16


def test_search_by_code_as_typed(staff, alice):
    grant = Grant.objects.filter(member=alice).first()
    typed = grant.code.replace("-", " ").lower()

    response = staff.get(reverse(GRANTS), {"q": typed})

    assert list(response.context["cl"].result_list) == [grant]


def test_filter_by_status(staff, alice, catalogue):
    Grant.objects.filter(member=alice, benefit=catalogue["shipping"]).update(
        status=Status.ENDED
    )

    response = staff.get(reverse(GRANTS), {"status__exact": "ended"})

    assert [grant.benefit for grant in response.context["cl"].result_list] == [
        catalogue["shipping"]
    ]


def test_redeem_action(staff, mei, alice, catalogue):
    coupon = Grant.objects.get(member=alice, benefit=catalogue["welcome_coupon"])

    response = staff.post(
        reverse(GRANTS), action_data("redeem_selected", coupon), follow=True
    )

    assert "1 grant redeemed." in response.content.decode()
    coupon.refresh_from_db()
    assert coupon.status == Status.REDEEMED
    assert coupon.redeemed_by == mei


def test_redeem_action_reports_rejection(staff, alice, catalogue):
    shipping = Grant.objects.get(member=alice, benefit=catalogue["shipping"])

    response = staff.post(
        reverse(GRANTS), action_data("redeem_selected", shipping), follow=True
    )

    assert "ongoing benefit" in response.content.decode()
    shipping.refresh_from_db()
    assert shipping.status == Status.ISSUED


def test_queue_lists_only_waiting(staff, waiting, catalogue):
    response = staff.get(reverse(QUEUE))

    assert [grant.pk for grant in response.context["cl"].result_list] == [waiting.pk]


def test_approve_from_queue(staff, mei, waiting):
    response = staff.post(
        reverse(QUEUE), action_data("approve_selected", waiting), follow=True
    )

    assert "1 grant approved and issued." in response.content.decode()
    waiting.refresh_from_db()
    assert waiting.status == Status.ISSUED
    assert waiting.decided_by == mei
    assert waiting.auto_approved is False


def test_reject_from_queue_needs_reason(staff, waiting):
    response = staff.post(
        reverse(QUEUE), action_data("reject_selected", waiting), follow=True
    )

    assert "A reason is required to reject a grant." in response.content.decode()
    waiting.refresh_from_db()
    assert waiting.status == Status.AWAITING_APPROVAL


def test_reject_from_queue(staff, waiting):
    staff.post(
        reverse(QUEUE),
        action_data("reject_selected", waiting, reason="Duplicate account"),
        follow=True,
    )

    waiting.refresh_from_db()
    assert waiting.status == Status.REJECTED
    assert waiting.rejection_reason == "Duplicate account"


def test_queue_needs_approve_permission(waiting, django_user_model):
    clerk = django_user_model.objects.create_user("clerk", is_staff=True)
    client = Client()
    client.force_login(clerk)

    assert client.get(reverse(QUEUE)).status_code == 403


def test_benefit_list_counts_grants_waiting_for_stock(staff, ladder, store, catalogue):
    Benefit.objects.filter(pk=catalogue["tote"].pk).update(stock=0)
    member_in_gold(store, "B-1", timezone.now())
    member_in_gold(store, "B-2", timezone.now())
    issue_for_tier_changes()

    response = staff.get(reverse("admin:benefits_benefit_changelist"))

    rows = {benefit.name: benefit for benefit in response.context["cl"].result_list}
    assert rows["Gold tote bag"].waiting_count == 2
    assert rows["Free shipping"].waiting_count == 0


def test_grant_detail_is_read_only(staff, alice):
    grant = Grant.objects.filter(member=alice).first()

    response = staff.get(reverse("admin:benefits_grant_change", args=[grant.pk]))

    assert response.status_code == 200
    assert grant.code in response.content.decode()
    assert staff.get(reverse("admin:benefits_grant_add")).status_code == 403
