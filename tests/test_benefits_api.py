"""The benefits REST API: authentication, permissions, status codes and bodies.

The till user has a token and the redeem and view permissions. The intern
has a token and no permissions. Alice has a Silver welcome coupon.
"""

from __future__ import annotations

import uuid

import pytest
from django.contrib.auth.models import Permission, User
from django.urls import reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from benefits.issuing import issue_for_tier_changes
from benefits.models import Grant, TierPeriod
from members.models import Member
from tests.test_benefits_support import create_catalogue, member_in_silver

REDEEM_URL = "/api/v1/benefits/redemptions/"


@pytest.fixture
def alice(ladder, store) -> Member:
    create_catalogue(ladder)
    member = member_in_silver(store, "A-1", timezone.now(), name="Alice")
    issue_for_tier_changes()
    return member


@pytest.fixture
def coupon(alice) -> Grant:
    return Grant.objects.get(member=alice, origin=Grant.Origin.WELCOME)


def token_client(user: User) -> APIClient:
    client = APIClient()
    token = Token.objects.create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def till(django_user_model) -> APIClient:
    user = django_user_model.objects.create_user("till-xuhui")
    user.user_permissions.add(
        Permission.objects.get(codename="redeem_grant"),
        Permission.objects.get(codename="view_grant"),
    )
    return token_client(user)


@pytest.fixture
def intern(django_user_model) -> APIClient:
    return token_client(django_user_model.objects.create_user("intern"))


def grants_url(member: Member) -> str:
    return reverse("benefits:member-grants", args=[member.public_id])


def test_redeem_url_is_stable():
    assert reverse("benefits:redeem") == REDEEM_URL


def test_anonymous_rejected(coupon, store):
    client = APIClient()

    redeem_response = client.post(
        REDEEM_URL,
        {"code": coupon.code, "channel": "store-xuhui", "reference": "O-1"},
        format="json",
    )
    list_response = client.get(grants_url(coupon.member))

    assert redeem_response.status_code == 401
    assert redeem_response["WWW-Authenticate"] == "Token"
    assert list_response.status_code == 401


def test_wrong_token_rejected(coupon):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-real-token")

    response = client.get(grants_url(coupon.member))

    assert response.status_code == 401


def test_user_without_permission_forbidden(intern, coupon, store):
    response = intern.post(
        REDEEM_URL,
        {"code": coupon.code, "channel": "store-xuhui", "reference": "O-1"},
        format="json",
    )

    assert response.status_code == 403
    assert "redeem" in response.json()["detail"]
    coupon.refresh_from_db()
    assert coupon.status == Grant.Status.ISSUED


def test_redeem_returns_grant(till, coupon, store):
    response = till.post(
        REDEEM_URL,
        {"code": coupon.code, "channel": "store-xuhui", "reference": "O-1"},
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["replayed"] is False
    assert body["grant"]["code"] == coupon.code
    assert body["grant"]["status"] == "redeemed"
    assert body["grant"]["redeemed_channel"] == "store-xuhui"
    assert body["grant"]["redemption_reference"] == "O-1"
    assert body["grant"]["benefit"] == "Welcome coupon ¥50"


def test_redeem_by_grant_id(till, coupon, store):
    response = till.post(
        REDEEM_URL,
        {"grant": coupon.pk, "channel": "store-xuhui", "reference": "O-1"},
        format="json",
    )

    assert response.status_code == 200


def test_retry_returns_same_success(till, coupon, store):
    payload = {"code": coupon.code, "channel": "store-xuhui", "reference": "O-1"}
    first = till.post(REDEEM_URL, payload, format="json").json()

    response = till.post(REDEEM_URL, payload, format="json")

    assert response.status_code == 200
    assert response.json()["replayed"] is True
    assert response.json()["grant"] == first["grant"]


def test_second_redemption_conflict(till, coupon, store):
    till.post(
        REDEEM_URL,
        {"code": coupon.code, "channel": "store-xuhui", "reference": "O-1"},
        format="json",
    )

    response = till.post(
        REDEEM_URL,
        {"code": coupon.code, "channel": "store-xuhui", "reference": "O-2"},
        format="json",
    )

    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "already_redeemed"
    assert body["detail"].startswith(f"Code {coupon.code} was already redeemed at ")


def test_unknown_code_not_found(till, coupon, store):
    response = till.post(
        REDEEM_URL,
        {"code": "ZZZZ-ZZZZ-ZZZZ", "channel": "store-xuhui", "reference": "O-1"},
        format="json",
    )

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"channel": "store-xuhui", "reference": "O-1"}, "non_field_errors"),
        ({"code": "X", "channel": "store-xuhui"}, "reference"),
        ({"code": "X", "channel": "store-xuhui", "reference": ""}, "reference"),
        ({"code": "X", "channel": "nowhere", "reference": "O-1"}, "channel"),
        ({"code": "X", "reference": "O-1"}, "channel"),
        ({"grant": "abc", "channel": "store-xuhui", "reference": "O-1"}, "grant"),
    ],
)
def test_bad_input_rejected(till, coupon, store, payload, field):
    response = till.post(REDEEM_URL, payload, format="json")

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid"
    assert field in body["fields"]


def test_unknown_channel_message_names_code(till, coupon, store):
    response = till.post(
        REDEEM_URL,
        {"code": coupon.code, "channel": "nowhere", "reference": "O-1"},
        format="json",
    )

    assert response.json()["fields"]["channel"] == [
        "No channel has code nowhere; use a channel code from the admin's channel list."
    ]


def test_list_member_grants(till, alice, coupon):
    response = till.get(grants_url(alice))

    assert response.status_code == 200
    body = response.json()
    assert body["member"] == str(alice.public_id)
    codes = {grant["code"]: grant for grant in body["grants"]}
    assert set(codes) == set(
        Grant.objects.filter(member=alice).values_list("code", flat=True)
    )
    assert codes[coupon.code]["status"] == "issued"
    assert codes[coupon.code]["tier"] == "Silver"
    assert codes[coupon.code]["expires_at"] is not None


def test_list_filters_by_status(till, alice, coupon, store):
    till.post(
        REDEEM_URL,
        {"code": coupon.code, "channel": "store-xuhui", "reference": "O-1"},
        format="json",
    )

    response = till.get(grants_url(alice), {"status": "redeemed"})

    assert [grant["code"] for grant in response.json()["grants"]] == [coupon.code]


def test_list_unknown_status_rejected(till, alice):
    response = till.get(grants_url(alice), {"status": "lost"})

    assert response.status_code == 400
    assert "Unknown status 'lost'" in response.json()["detail"]


def test_list_unknown_member_not_found(till, alice):
    response = till.get(reverse("benefits:member-grants", args=[uuid.uuid4()]))

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_list_query_count_is_flat(till, alice, coupon, django_assert_num_queries):
    # Five queries: the token joined with its user, the user's own and group
    # permissions (2), the member's id, and the grants joined with benefit,
    # tier and redemption channel.
    with django_assert_num_queries(5):
        till.get(grants_url(alice))

    for year in range(2000, 2003):
        period = TierPeriod.objects.create(
            member=alice,
            tier=coupon.tier,
            starts_at=coupon.period.starts_at.replace(year=year),
            ends_at=coupon.period.starts_at.replace(year=year + 1),
        )
        Grant.objects.create(
            member=alice,
            benefit=coupon.benefit,
            tier=coupon.tier,
            period=period,
            origin=Grant.Origin.WELCOME,
            status=Grant.Status.EXPIRED,
            code=f"TEST-0000-{year}",
            created_at=coupon.created_at,
            issued_at=coupon.issued_at,
        )

    with django_assert_num_queries(5):
        response = till.get(grants_url(alice))
    assert len(response.json()["grants"]) == 5


def test_staff_session_can_list(client, alice, django_user_model):
    admin = django_user_model.objects.create_superuser("boss", password="x" * 12)
    client.force_login(admin)

    response = client.get(grants_url(alice))

    assert response.status_code == 200
