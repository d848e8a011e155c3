"""The benefits section of the member page and its pool choice form.

Alice is Silver with a welcome coupon and free shipping. Bob is Gold with a
tote bag, 5% off and one choice from "Gold pick". Pages are read in English.
"""

from __future__ import annotations

import time
import types
from unittest import mock

import pytest
from django.core import signing
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from benefits.issuing import issue_for_tier_changes
from benefits.models import Benefit, Grant
from members.links import member_page_url, member_token
from members.models import Member
from tests.test_benefits_support import (
    create_catalogue,
    member_in_gold,
    member_in_silver,
)
from tiers.formatting import format_date

Status = Grant.Status


@pytest.fixture
def catalogue(ladder):
    return create_catalogue(ladder)


@pytest.fixture
def alice(ladder, store, catalogue) -> Member:
    member = member_in_silver(store, "A-1", timezone.now(), name="Alice")
    issue_for_tier_changes()
    return member


@pytest.fixture
def bob(ladder, store, catalogue) -> Member:
    member = member_in_gold(store, "B-1", timezone.now(), name="Bob")
    issue_for_tier_changes()
    return member


@pytest.fixture
def browser() -> Client:
    """A client that enforces CSRF like a real browser session would."""
    return Client(enforce_csrf_checks=True, HTTP_ACCEPT_LANGUAGE="en")


def choose_url(member: Member) -> str:
    return reverse("benefits:choose", args=[member_token(member)])


def page_html(client: Client, member: Member) -> str:
    response = client.get(member_page_url(member), HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    return response.content.decode()


def test_page_lists_grants_with_status_and_expiry(client, alice, catalogue):
    coupon = Grant.objects.get(member=alice, benefit=catalogue["welcome_coupon"])

    html = page_html(client, alice)

    assert "Welcome coupon ¥50" in html
    assert f"Valid until {format_date(coupon.expires_at)}" in html
    assert coupon.code in html
    assert "Free shipping" in html
    assert "No expiry" in html
    assert html.count('data-status="issued"') == 2


def test_page_hides_code_until_approved(client, ladder, store, catalogue):
    Benefit.objects.filter(pk=catalogue["welcome_coupon"].pk).update(
        approval_required=True
    )
    alice = member_in_silver(store, "A-1", timezone.now(), name="Alice")
    issue_for_tier_changes()
    coupon = Grant.objects.get(member=alice, benefit=catalogue["welcome_coupon"])

    html = page_html(client, alice)

    assert "Waiting for approval" in html
    assert coupon.code not in html


def test_page_shows_ended_grant_status(client, alice, catalogue):
    Grant.objects.filter(member=alice, benefit=catalogue["shipping"]).update(
        status=Status.ENDED, ended_at=timezone.now()
    )

    html = page_html(client, alice)

    assert "Ended: left the tier" in html
    assert f"Ended on {format_date(timezone.now())}" in html


def test_page_shows_pool_form(client, bob):
    # A link carries the second it was signed, so the form's action is
    # checked against the link this page was opened with.
    link_token = member_token(bob)
    response = client.get(
        reverse("members:page", args=[link_token]), HTTP_ACCEPT_LANGUAGE="en"
    )
    html = response.content.decode()

    assert "Gold pick" in html
    assert "Choose 1 option." in html
    assert "Choices left: 1." in html
    assert 'name="csrfmiddlewaretoken"' in html
    choose = reverse("benefits:choose", args=[link_token])
    assert f'action="{choose}"' in html
    for option in ("Listening party", "500 points", "Signed poster"):
        assert option in html


def test_choice_without_csrf_token_forbidden(browser, bob, catalogue):
    response = browser.post(
        choose_url(bob),
        {"pool": catalogue["pool"].pk, "benefit": catalogue["points"].pk},
    )

    assert response.status_code == 403
    assert not Grant.objects.filter(member=bob, pool__isnull=False).exists()


def post_choice(browser: Client, link_token: str, pool_id: int, benefit_id: int):
    """Open the member page, then post a choice with its CSRF token."""
    browser.get(reverse("members:page", args=[link_token]))
    csrf_token = browser.cookies["csrftoken"].value
    return browser.post(
        reverse("benefits:choose", args=[link_token]),
        {"pool": pool_id, "benefit": benefit_id, "csrfmiddlewaretoken": csrf_token},
        follow=True,
    )


def test_choice_is_recorded_and_shown(browser, bob, catalogue):
    link_token = member_token(bob)

    response = post_choice(
        browser, link_token, catalogue["pool"].pk, catalogue["points"].pk
    )

    html = response.content.decode()
    page = reverse("members:page", args=[link_token])
    assert response.redirect_chain == [(page + "#benefits-heading", 302)]
    assert "You chose “500 points”." in html
    assert "500 points (chosen)" in " ".join(html.split())
    assert "Choices left: 0." in html
    grant = Grant.objects.get(member=bob, pool=catalogue["pool"])
    assert grant.benefit == catalogue["points"]
    assert grant.code in html


def test_second_choice_shows_refusal(browser, bob, catalogue):
    link_token = member_token(bob)
    post_choice(browser, link_token, catalogue["pool"].pk, catalogue["points"].pk)

    response = post_choice(
        browser, link_token, catalogue["pool"].pk, catalogue["party"].pk
    )

    html = response.content.decode()
    assert "You have already made all 1 of your choices from “Gold pick”." in html
    assert Grant.objects.filter(member=bob, pool=catalogue["pool"]).count() == 1


def test_choice_response_not_stored(client, bob, catalogue):
    response = client.post(
        choose_url(bob),
        {"pool": catalogue["pool"].pk, "benefit": catalogue["points"].pk},
    )

    assert response.status_code == 302
    assert "no-store" in response["Cache-Control"]


def test_choice_with_bad_input_shows_message(client, bob):
    response = client.post(
        choose_url(bob), {"pool": "x"}, follow=True, HTTP_ACCEPT_LANGUAGE="en"
    )

    assert "Pick one of the options, then press Choose." in response.content.decode()


def test_choice_with_forged_link_not_found(client, bob, catalogue):
    url = reverse("benefits:choose", args=[member_token(bob)[:-2] + "xx"])

    response = client.post(
        url, {"pool": catalogue["pool"].pk, "benefit": catalogue["points"].pk}
    )

    assert response.status_code == 404
    assert not Grant.objects.filter(member=bob, pool__isnull=False).exists()


def test_choice_with_expired_link_gone(client, bob, catalogue, settings):
    settings.CRM_MEMBER_LINK_MAX_AGE_DAYS = 30
    url = choose_url(bob)
    later = types.SimpleNamespace(time=lambda: time.time() + 31 * 24 * 3600)

    with mock.patch.object(signing, "time", later):
        response = client.post(
            url, {"pool": catalogue["pool"].pk, "benefit": catalogue["points"].pk}
        )

    assert response.status_code == 410
    assert "no-store" in response["Cache-Control"]


def test_choice_get_not_allowed(client, bob):
    assert client.get(choose_url(bob)).status_code == 405
