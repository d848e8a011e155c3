"""The member page in three queries, and changes that show on the next view.

Personas: Bob reached Gold with welcome and ongoing grants and a pool
choice. After a refund only the floor that staff set keeps him there, and he
has an in-app message. Alice is a
Silver member with ¥1,300 of purchases in the last 365 days.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.utils import timezone, translation

from benefits.issuing import issue_for_tier_changes
from benefits.models import Benefit, Grant, TierPeriod
from benefits.pools import choose_from_pool
from members.links import member_page_url
from members.models import Activity, Member, OutboxMessage
from members.page_data import load_page_rows
from tests.conftest import make_member, publish_spec, record
from tests.test_benefits_support import create_catalogue, member_in_gold
from tiers.evaluation import evaluate
from tiers.models import TierOverride
from tiers.overrides import request_override
from tiers.rules import Need, TierSpec, VersionSpec, all_of

# The member with its tier, the page's rows in one UNION ALL, and the
# metrics aggregate (see tests/test_member_page.py for the full list).
PAGE_QUERIES = 3


@pytest.fixture(autouse=True)
def english():
    with translation.override("en"):
        yield


@pytest.fixture
def carol(db) -> User:
    """The staff member who sets overrides."""
    return User.objects.create_superuser("carol", "carol@example.com", "pw-12345-x")


@pytest.fixture
def catalogue(ladder):
    return create_catalogue(ladder)


@pytest.fixture
def bob(ladder, store, catalogue, carol) -> Member:
    member = member_in_gold(store, "B-1", timezone.now(), name="Bob Li")
    issue_for_tier_changes()
    choose_from_pool(member, catalogue["pool"].pk, catalogue["points"].pk)
    request_override(member, ladder["gold"], TierOverride.Mode.FLOOR, "VIP", carol)
    # Below Gold's rules now, so only the floor keeps him there.
    record(member, store, "refund", timezone.now(), "-6000")
    OutboxMessage.objects.create(
        member=member,
        channel="in_app",
        topic=OutboxMessage.Topic.PROMOTION,
        key=f"promotion:{member.pk}",
        params={"tier": "Gold"},
        language="en",
        status=OutboxMessage.Status.SENT,
    )
    member.refresh_from_db()
    return member


@pytest.fixture
def alice(ladder, store) -> Member:
    member = make_member(store, "A-1", name="Alice Wang")
    record(member, store, "purchase", timezone.now() - dt.timedelta(days=30), "1000")
    record(member, store, "purchase", timezone.now() - dt.timedelta(days=3), "300")
    evaluate([member.pk])
    member.refresh_from_db()
    assert member.tier == ladder["silver"]
    return member


def sent_in_app(member: Member):
    return OutboxMessage.objects.filter(
        member=member, channel="in_app", status=OutboxMessage.Status.SENT
    ).order_by("-created_at", "-pk")


def page(client, member: Member):
    response = client.get(member_page_url(member), HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200
    return response


def test_full_page_in_three_queries(client, bob, django_assert_num_queries):
    page(client, bob)

    with django_assert_num_queries(PAGE_QUERIES):
        response = page(client, bob)

    context = response.context
    assert {row.name for row in context["grants"]} >= {"Gold tote bag", "500 points"}
    assert [benefit.name for benefit in context["benefits"]] == [
        "5% off",
        "Gold tote bag",
    ]
    (pool,) = context["pools"]
    assert pool.chosen_count == 1
    assert [option.name for option in pool.options if option.chosen] == ["500 points"]
    assert context["progress"].override_text == "Staff keep you at Gold or above."
    assert len(context["notifications"]) == sent_in_app(bob).count()
    assert len(context["activities"]) == 7


def test_member_without_tier_in_three_queries(
    client, ladder, store, django_assert_num_queries
):
    newcomer = make_member(store, "N-1", name="New Member")
    page(client, newcomer)

    with django_assert_num_queries(PAGE_QUERIES):
        response = page(client, newcomer)

    assert response.context["benefits"] == []
    assert response.context["activities"] == []
    assert response.context["pools"] == []


def test_page_rows_match_orm(bob):
    rows = load_page_rows(Member.objects.select_related("tier").get(pk=bob.pk))

    stored_grants = list(Grant.objects.filter(member=bob))
    assert sorted(rows.grants, key=lambda g: g.pk) == sorted(
        stored_grants, key=lambda g: g.pk
    )
    for loaded in rows.grants:
        stored = Grant.objects.get(pk=loaded.pk)
        assert loaded.created_at == stored.created_at
        assert loaded.expires_at == stored.expires_at
        assert loaded.status == stored.status
        assert loaded.code == stored.code
        assert loaded.benefit.name == stored.benefit.name
    points = Benefit.objects.get(name="500 points")
    loaded_points = next(g.benefit for g in rows.grants if g.benefit_id == points.pk)
    assert loaded_points.value == Decimal("500")
    assert rows.period == TierPeriod.objects.filter(member=bob).latest("ends_at")
    assert rows.messages == list(sent_in_app(bob))
    message = next(m for m in rows.messages if m.key == f"promotion:{bob.pk}")
    assert message.params == {"tier": "Gold"}
    assert message.created_at == OutboxMessage.objects.get(pk=message.pk).created_at
    (override,) = rows.overrides
    assert override.summary() == TierOverride.objects.get(pk=override.pk).summary()


def test_recent_activity_amounts_exact(client, store, bob):
    record(bob, store, "purchase", timezone.now(), "1234.56", "EXACT-1")
    rows = load_page_rows(bob)

    newest = rows.activities[0]
    assert newest.reference == "EXACT-1"
    assert newest.amount == Decimal("1234.56")
    assert newest.occurred_at == Activity.objects.get(reference="EXACT-1").occurred_at
    assert newest.kind.code == "purchase"
    assert newest.channel == store


def test_published_version_shows_on_next_view(client, ladder, alice):
    before = page(client, alice).context["progress"]
    assert before.next_tier.requirements[0].target == Decimal("5000")

    publish_spec(
        VersionSpec(
            tiers=[
                TierSpec(ladder["bronze"]),
                TierSpec(ladder["silver"], all_of(Need("net_spend", 1000))),
                TierSpec(ladder["gold"], all_of(Need("net_spend", 8000))),
            ]
        )
    )
    after = page(client, alice).context["progress"]

    assert after.next_tier.requirements[0].target == Decimal("8000")


def test_override_shows_on_next_view(client, ladder, alice, carol):
    assert page(client, alice).context["progress"].override_text == ""

    until = timezone.now() + dt.timedelta(days=30)
    request_override(
        alice, ladder["gold"], TierOverride.Mode.FIXED, "Launch", carol, until
    )
    progress = page(client, alice).context["progress"]

    assert progress.current.name == "Gold"
    assert progress.override_text.startswith("Staff keep you at Gold until ")


def test_tier_change_shows_on_next_view(client, store, alice):
    assert page(client, alice).context["progress"].current.name == "Silver"

    for number in range(6):
        record(alice, store, "purchase", timezone.now(), "1000", f"UP-{number}")
    evaluate([alice.pk])
    response = page(client, alice)

    assert response.context["progress"].current.name == "Gold"
    assert len(response.context["activities"]) == 8
