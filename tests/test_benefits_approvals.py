"""The approval queue: staff decisions, the deadline, and the two racing.

Alice's Silver welcome coupon needs approval within 2 days. Its stock is 10.
Mei is the staff member who decides.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from benefits.approvals import ApprovalError, approve, approve_overdue_grants, reject
from benefits.issuing import issue_for_tier_changes
from benefits.models import Benefit, Grant
from tests.test_benefits_support import (
    NEEDS_POSTGRESQL,
    ON_POSTGRESQL,
    create_catalogue,
    member_in_silver,
    run_at_once,
)

Status = Grant.Status


def waiting_coupon(ladder, store) -> Grant:
    catalogue = create_catalogue(ladder)
    Benefit.objects.filter(pk=catalogue["welcome_coupon"].pk).update(
        approval_required=True, approval_days=2, stock=10
    )
    alice = member_in_silver(store, "A-1", timezone.now(), name="Alice")
    issue_for_tier_changes()
    return Grant.objects.select_related("benefit").get(
        member=alice, benefit=catalogue["welcome_coupon"]
    )


@pytest.fixture
def coupon(ladder, store) -> Grant:
    return waiting_coupon(ladder, store)


@pytest.fixture
def mei(django_user_model) -> User:
    return django_user_model.objects.create_user("mei", is_staff=True)


@pytest.fixture
def sent(monkeypatch) -> list[str]:
    keys: list[str] = []
    monkeypatch.setattr(
        "benefits.issuing.notify",
        lambda member_id, topic, params, key: keys.append(key),
    )
    return keys


def stock_of(grant: Grant) -> int | None:
    return Benefit.objects.get(pk=grant.benefit_id).stock


def test_waiting_grant_holds_stock(coupon):
    assert coupon.status == Status.AWAITING_APPROVAL
    assert coupon.stock_taken
    assert stock_of(coupon) == 9


def test_staff_approval_issues(coupon, mei, sent):
    approved = approve(coupon, mei)

    assert approved.status == Status.ISSUED
    assert approved.decided_by == mei
    assert approved.auto_approved is False
    assert approved.issued_at == approved.decided_at
    assert approved.expires_at == approved.issued_at + dt.timedelta(days=30)
    assert sent == [f"grant-issued:{coupon.pk}"]


def test_rejection_returns_stock(coupon, mei):
    rejected = reject(coupon, mei, "Duplicate account")

    assert rejected.status == Status.REJECTED
    assert rejected.rejection_reason == "Duplicate account"
    assert rejected.stock_taken is False
    assert stock_of(coupon) == 10


def test_rejection_needs_reason(coupon, mei):
    with pytest.raises(ApprovalError, match="reason is required"):
        reject(coupon, mei, "  ")


def test_second_decision_rejected(coupon, mei):
    approve(coupon, mei)

    with pytest.raises(ApprovalError, match="not waiting for approval"):
        reject(coupon, mei, "Too late")

    assert stock_of(coupon) == 9


def test_nothing_approved_before_deadline(coupon):
    before = coupon.approval_due_at - dt.timedelta(seconds=1)

    assert approve_overdue_grants(now=before) == {"approved": 0}

    coupon.refresh_from_db()
    assert coupon.status == Status.AWAITING_APPROVAL


def test_deadline_approves_automatically(coupon, sent):
    deadline = coupon.approval_due_at

    counts = approve_overdue_grants(now=deadline)

    coupon.refresh_from_db()
    assert counts == {"approved": 1}
    assert coupon.status == Status.ISSUED
    assert coupon.auto_approved is True
    assert coupon.decided_by is None
    assert coupon.decided_at == deadline
    assert coupon.issued_at == deadline
    assert sent == [f"grant-issued:{coupon.pk}"]
    assert approve_overdue_grants(now=deadline) == {"approved": 0}


def test_staff_cannot_decide_after_deadline_job(coupon, mei):
    approve_overdue_grants(now=coupon.approval_due_at)

    with pytest.raises(ApprovalError, match="not waiting for approval"):
        reject(coupon, mei, "Changed my mind")


def test_deadline_job_keeps_staff_rejection(coupon, mei):
    reject(coupon, mei, "Duplicate account")

    assert approve_overdue_grants(now=coupon.approval_due_at) == {"approved": 0}

    coupon.refresh_from_db()
    assert coupon.status == Status.REJECTED
    assert coupon.auto_approved is False


@pytest.mark.skipif(not ON_POSTGRESQL, reason=NEEDS_POSTGRESQL)
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_rejection_racing_deadline_decides_once(ladder, store, django_user_model):
    coupon = waiting_coupon(ladder, store)
    mei = django_user_model.objects.create_user("mei", is_staff=True)

    def decide(number: int):
        if number % 2:
            return approve_overdue_grants(now=coupon.approval_due_at)["approved"]
        reject(coupon, mei, "Duplicate account")
        return "rejected"

    results, errors = run_at_once(decide, 6)

    coupon.refresh_from_db()
    assert all(isinstance(error, ApprovalError) for error in errors)
    if coupon.status == Status.REJECTED:
        assert results.count("rejected") == 1
        assert sum(r for r in results if isinstance(r, int)) == 0
        assert stock_of(coupon) == 10
    else:
        assert coupon.status == Status.ISSUED
        assert coupon.auto_approved is True
        assert "rejected" not in results
        assert sum(r for r in results if isinstance(r, int)) == 1
        assert stock_of(coupon) == 9
