"""Activities entered in the admin are checked by the import's and API's rules.

Staff is a superuser working in English. Alice is a Silver member with
five ¥1,000 orders on the standard ladder. Also covered here: the member
admin's language field and redemption log lines with a forged reference.
"""

from __future__ import annotations

import datetime as dt
import logging
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from benefits.issuing import issue_for_tier_changes
from benefits.models import Grant
from benefits.redemption import RedemptionRejected, redeem
from members.admin import ActivityAdminForm
from members.models import Activity, ActivityKind, Channel, Member
from tests.conftest import make_member, record
from tests.test_benefits_support import create_catalogue, member_in_silver
from tiers.evaluation import evaluate

pytestmark = pytest.mark.django_db

ADD_URL = "admin:members_activity_add"


@pytest.fixture
def staff() -> Client:
    user = User.objects.create_superuser("staff", "staff@example.com", "pw-12345-x")
    client = Client(headers={"accept-language": "en"})
    client.force_login(user)
    return client


@pytest.fixture
def alice(ladder, store) -> Member:
    member = make_member(store, "A-1", name="Alice Wang")
    now = timezone.now()
    for day in range(1, 6):
        record(member, store, "purchase", now - dt.timedelta(days=day), "1000")
    evaluate([member.pk])
    member.refresh_from_db()
    assert member.tier == ladder["silver"]
    return member


def activity_form(
    member: Member, channel: Channel, kind: str = "purchase", **values: str
) -> dict[str, str]:
    """Return the POST data of the activity add form, by default a purchase."""
    yesterday = timezone.localtime() - dt.timedelta(days=1)
    data = {
        "member": str(member.pk),
        "channel": str(channel.pk),
        "kind": str(ActivityKind.objects.get(code=kind).pk),
        "occurred_at_0": yesterday.date().isoformat(),
        "occurred_at_1": "10:00:00",
        "amount": "100",
        "quantity": "1",
        "reference": "DESK-1",
    }
    data.update(values)
    return data


def form_errors(response) -> dict[str, list[str]]:
    return {
        name: [str(message) for message in messages]
        for name, messages in response.context["adminform"].form.errors.items()
    }


def net_spend(member: Member) -> Decimal:
    amounts = Activity.objects.filter(member=member).values_list("amount", flat=True)
    return sum(amounts, Decimal(0))


# Refunds are stored negative, as an import stores them


@pytest.mark.parametrize("entered", ["150.00", "-150.00"])
def test_refund_stored_negative(staff, alice, store, entered):
    response = staff.post(
        reverse(ADD_URL), activity_form(alice, store, "refund", amount=entered)
    )

    assert response.status_code == 302
    refund = Activity.objects.get(reference="DESK-1")
    assert refund.amount == Decimal("-150.00")
    assert net_spend(alice) == Decimal("4850.00")


def test_refund_edit_keeps_sign(staff, alice, store):
    refund = record(alice, store, "refund", timezone.now(), "-150")
    local_time = timezone.localtime(refund.occurred_at)
    data = activity_form(
        alice,
        store,
        "refund",
        amount="-150.00",
        reference=refund.reference,
        occurred_at_0=local_time.date().isoformat(),
        occurred_at_1=f"{local_time:%H:%M:%S}",
    )

    response = staff.post(
        reverse("admin:members_activity_change", args=[refund.pk]), data
    )

    assert response.status_code == 302
    refund.refresh_from_db()
    assert refund.amount == Decimal("-150.00")


# Amounts must fit the kind's role


def test_negative_purchase_rejected(staff, alice, store):
    response = staff.post(reverse(ADD_URL), activity_form(alice, store, amount="-20"))

    assert response.status_code == 200
    errors = form_errors(response)
    assert list(errors) == ["amount"]
    assert "a purchase cannot be" in errors["amount"][0]
    assert "record it with kind refund" in errors["amount"][0]
    assert not Activity.objects.filter(reference="DESK-1").exists()


@pytest.mark.parametrize("kind", ["visit", "review", "referral"])
def test_amount_on_kind_without_money_rejected(staff, alice, store, kind):
    response = staff.post(
        reverse(ADD_URL), activity_form(alice, store, kind, amount="25")
    )

    assert response.status_code == 200
    errors = form_errors(response)
    assert list(errors) == ["amount"]
    assert f"must be 0 for kind {kind}" in errors["amount"][0]
    assert not Activity.objects.filter(reference="DESK-1").exists()


@pytest.mark.parametrize("kind", ["visit", "review", "referral"])
def test_kind_without_money_saved_at_zero(staff, alice, store, kind):
    response = staff.post(
        reverse(ADD_URL), activity_form(alice, store, kind, amount="0")
    )

    assert response.status_code == 302
    assert Activity.objects.get(reference="DESK-1").amount == 0


def test_purchase_without_items_rejected(staff, alice, store):
    response = staff.post(reverse(ADD_URL), activity_form(alice, store, quantity="0"))

    assert response.status_code == 200
    errors = form_errors(response)
    assert list(errors) == ["quantity"]
    assert "must be at least 1 for a purchase" in errors["quantity"][0]


# Dates must lie between 1990 and one day after now


@pytest.mark.parametrize(
    ("day", "reason"),
    [
        ("1900-01-01", "is before 1990-01-01"),
        ("1989-12-31", "is before 1990-01-01"),
        ("2099-01-01", "is more than 1 day in the future"),
    ],
)
def test_implausible_date_rejected(staff, alice, store, day, reason):
    response = staff.post(
        reverse(ADD_URL), activity_form(alice, store, occurred_at_0=day)
    )

    assert response.status_code == 200
    errors = form_errors(response)
    assert list(errors) == ["occurred_at"]
    assert errors["occurred_at"][0].startswith(f"{day} 10:00 {reason}")
    assert not Activity.objects.filter(reference="DESK-1").exists()


def test_date_beyond_skew_rejected(staff, alice, store):
    later = timezone.localtime() + dt.timedelta(days=2)

    response = staff.post(
        reverse(ADD_URL),
        activity_form(
            alice,
            store,
            occurred_at_0=later.date().isoformat(),
            occurred_at_1=f"{later:%H:%M:%S}",
        ),
    )

    assert response.status_code == 200
    assert "is more than 1 day in the future" in form_errors(response)["occurred_at"][0]


def test_date_within_skew_accepted(staff, alice, store):
    later = timezone.localtime() + dt.timedelta(hours=2)

    response = staff.post(
        reverse(ADD_URL),
        activity_form(
            alice,
            store,
            occurred_at_0=later.date().isoformat(),
            occurred_at_1=f"{later:%H:%M:%S}",
        ),
    )

    assert response.status_code == 302
    assert Activity.objects.filter(reference="DESK-1").exists()


def test_amount_beyond_field_size_rejected(staff, alice, store):
    response = staff.post(
        reverse(ADD_URL), activity_form(alice, store, amount="1000000000000.00")
    )

    assert response.status_code == 200
    assert "amount" in form_errors(response)


def test_absurd_amount_rejected(staff, alice, store):
    response = staff.post(
        reverse(ADD_URL), activity_form(alice, store, amount="999999999999.99")
    )

    assert response.status_code == 200
    assert "CRM_MAX_ACTIVITY_AMOUNT" in " ".join(form_errors(response)["amount"])
    assert not Activity.objects.filter(amount__gt=1_000_000).exists()


# The member admin edits and filters the member's language


def test_member_language_editable(staff, alice):
    url = reverse("admin:members_member_change", args=[alice.pk])

    page = staff.get(url)

    assert page.status_code == 200
    assert "language" in page.context["adminform"].form.fields


def test_member_list_filters_by_language(staff, alice):
    Member.objects.filter(pk=alice.pk).update(language="en")

    page = staff.get(reverse("admin:members_member_changelist"), {"language": "en"})

    assert page.status_code == 200
    assert list(page.context["cl"].queryset) == [alice]


# Redemption log lines escape the channel's reference


FORGED = "ORDER-1\nINFO grant 999 redeemed by admin"


@pytest.fixture
def coupon(ladder, store) -> Grant:
    create_catalogue(ladder)
    member = member_in_silver(store, "C-1", timezone.now(), name="Chen")
    issue_for_tier_changes()
    return Grant.objects.get(member=member, benefit__name="Welcome coupon ¥50")


def test_redeem_log_escapes_reference(coupon, store, caplog):
    with caplog.at_level(logging.INFO, logger="benefits.redemption"):
        redeem(code=coupon.code, channel=store, reference=FORGED)

    lines = [r.getMessage() for r in caplog.records if r.name == "benefits.redemption"]
    assert len(lines) == 1
    assert "\n" not in lines[0]
    assert repr(FORGED) in lines[0]
    assert f"member_id={coupon.member_id}" in lines[0]


def test_rejected_redeem_log_escapes_reference(coupon, store, caplog):
    redeem(code=coupon.code, channel=store, reference="ORDER-0")
    caplog.clear()

    with caplog.at_level(logging.INFO, logger="benefits.redemption"):
        with pytest.raises(RedemptionRejected):
            redeem(code=coupon.code, channel=store, reference=FORGED)

    lines = [r.getMessage() for r in caplog.records if r.name == "benefits.redemption"]
    assert len(lines) == 1
    assert "\n" not in lines[0]
    assert repr(FORGED) in lines[0]


def test_add_form_offers_no_opening_kind(db):
    codes = {kind.code for kind in ActivityAdminForm().fields["kind"].queryset}

    assert "purchase" in codes
    assert "opening" not in codes
