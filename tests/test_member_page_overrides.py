"""The member page shows when staff keep the member's tier by an override."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from members.links import member_page_url
from tests.conftest import make_member
from tiers.evaluation import evaluate
from tiers.models import TierOverride
from tiers.overrides import request_override

pytestmark = pytest.mark.django_db

Mode = TierOverride.Mode


@pytest.fixture
def carol(db) -> User:
    """The staff member who sets overrides."""
    return User.objects.create_superuser("carol", "carol@example.com", "pw-12345-x")


@pytest.fixture
def member(store, ladder):
    """A member without activity, placed in the base tier a week ago."""
    placed = make_member(store, "OV-1")
    evaluate([placed.pk], as_of=timezone.now() - dt.timedelta(days=7))
    placed.refresh_from_db()
    return placed


def page_text(client, member) -> str:
    response = client.get(member_page_url(member), HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    return response.content.decode()


def test_fixed_override_shown_with_end_date(client, ladder, member, carol):
    until = timezone.now() + dt.timedelta(days=60)
    request_override(
        member, ladder["silver"], Mode.FIXED, "Store opening guest", carol, until
    )

    html = page_text(client, member)

    member.refresh_from_db()
    assert member.tier == ladder["silver"]
    assert "Staff keep you at Silver until" in html


def test_floor_without_end_shown(client, ladder, member, carol):
    request_override(member, ladder["silver"], Mode.FLOOR, "Founding member", carol)

    assert "Staff keep you at Silver or above." in page_text(client, member)


def test_one_off_leaves_nothing_to_show(client, ladder, member, carol):
    request_override(member, ladder["silver"], Mode.ONE_OFF, "Goodwill", carol)

    assert "Staff keep you" not in page_text(client, member)


def test_no_override_no_text(client, member):
    assert "Staff keep you" not in page_text(client, member)
