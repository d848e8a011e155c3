"""Tier lifecycle in the admin: evaluation on activity saves, review settings,
review dates on members and tier history, and the evaluate_tiers summary.

Personas: staff is a superuser working in English. Alice is one order short of
Gold on the standard ladder, Bob is a Silver member with one purchase.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from members.models import Activity, ActivityKind, Member
from tests.conftest import local, make_member, publish_spec, record, standard_spec
from tests.test_tiers_admin import change_form_data, inline_index, staff_client
from tiers.evaluation import evaluate
from tiers.models import Downgrade, RuleVersion, TierChange, TierRule, Validity
from tiers.rules import copy_to_draft

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff() -> Client:
    user = User.objects.create_superuser("staff", "staff@example.com", "pw-12345-x")
    client = Client(headers={"accept-language": "en"})
    client.force_login(user)
    return client


@pytest.fixture
def alice(ladder, store) -> Member:
    """Silver with five orders of ¥1,000; a sixth order reaches Gold."""
    member = make_member(store, "A-1", name="Alice Wang")
    now = timezone.now()
    for day in range(1, 6):
        record(member, store, "purchase", now - dt.timedelta(days=day), "1000")
    evaluate([member.pk])
    member.refresh_from_db()
    assert member.tier == ladder["silver"]
    return member


@pytest.fixture
def bob(ladder, store) -> Member:
    member = make_member(store, "B-1", name="Bob Li")
    record(member, store, "purchase", timezone.now() - dt.timedelta(days=3), "1200")
    evaluate([member.pk])
    member.refresh_from_db()
    assert member.tier == ladder["silver"]
    return member


def activity_form(member: Member, channel, **values: str) -> dict[str, str]:
    """Return the POST data of the activity add form for a purchase yesterday."""
    yesterday = timezone.localtime() - dt.timedelta(days=1)
    data = {
        "member": str(member.pk),
        "channel": str(channel.pk),
        "kind": str(ActivityKind.objects.get(code="purchase").pk),
        "occurred_at_0": yesterday.date().isoformat(),
        "occurred_at_1": "10:00:00",
        "amount": "1000",
        "quantity": "1",
        "reference": "DESK-1",
    }
    data.update(values)
    return data


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# Activities saved in the admin re-evaluate their member


def test_activity_add_promotes_in_same_request(staff, alice, store):
    response = staff.post(
        reverse("admin:members_activity_add"),
        activity_form(alice, store),
        follow=True,
    )

    assert response.status_code == 200
    assert Activity.objects.filter(reference="DESK-1").exists()
    alice.refresh_from_db()
    assert alice.tier.name == "Gold"
    change = TierChange.objects.filter(member=alice).first()
    assert change.reason == TierChange.Reason.PROMOTION
    assert change.from_tier.name == "Silver"
    assert "Alice Wang was promoted to Gold." in messages_of(response)


def test_unchanged_tier_adds_no_message(staff, bob, store):
    response = staff.post(
        reverse("admin:members_activity_add"),
        activity_form(bob, store, amount="10"),
        follow=True,
    )

    bob.refresh_from_db()
    assert bob.tier.name == "Silver"
    messages = messages_of(response)
    assert len(messages) == 1
    assert "was added successfully" in messages[0]


def test_activity_edit_can_demote(staff, bob):
    purchase = Activity.objects.get(member=bob)
    url = reverse("admin:members_activity_change", args=[purchase.pk])
    local_time = timezone.localtime(purchase.occurred_at)
    data = activity_form(
        bob,
        purchase.channel,
        amount="500",
        reference=purchase.reference,
        occurred_at_0=local_time.date().isoformat(),
        occurred_at_1=f"{local_time:%H:%M:%S}",
    )

    response = staff.post(url, data, follow=True)

    bob.refresh_from_db()
    assert bob.tier.name == "Bronze"
    assert "Bob Li was demoted to Bronze." in messages_of(response)


def test_moved_activity_evaluates_both_members(staff, alice, bob):
    purchase = Activity.objects.get(member=bob)
    url = reverse("admin:members_activity_change", args=[purchase.pk])
    local_time = timezone.localtime(purchase.occurred_at)
    data = activity_form(
        alice,
        purchase.channel,
        amount="1200",
        reference=purchase.reference,
        occurred_at_0=local_time.date().isoformat(),
        occurred_at_1=f"{local_time:%H:%M:%S}",
    )

    response = staff.post(url, data, follow=True)

    alice.refresh_from_db()
    bob.refresh_from_db()
    assert alice.tier.name == "Gold"
    assert bob.tier.name == "Bronze"
    messages = messages_of(response)
    assert "Alice Wang was promoted to Gold." in messages
    assert "Bob Li was demoted to Bronze." in messages


def test_activity_saved_without_published_rules(staff, store):
    member = make_member(store, "N-1", name="Nina Zhao")

    response = staff.post(
        reverse("admin:members_activity_add"),
        activity_form(member, store),
        follow=True,
    )

    assert Activity.objects.filter(member=member).count() == 1
    member.refresh_from_db()
    assert member.tier is None
    assert any(
        message.startswith("The activity was saved, but tiers were not evaluated:")
        for message in messages_of(response)
    )


# Review settings on a draft version


def version_url(version: RuleVersion) -> str:
    return reverse("admin:tiers_ruleversion_change", args=[version.pk])


def test_draft_inline_saves_review_settings(ladder):
    client, _ = staff_client(
        "editor", ["view_ruleversion", "change_ruleversion", "change_tier"]
    )
    draft = copy_to_draft(RuleVersion.objects.get(number=1))
    gold = TierRule.objects.get(version=draft, tier__name="Gold")
    data = change_form_data(client.get(version_url(draft)))
    index = inline_index(data, "tier_rules", gold.pk)
    data.update(
        {
            f"tier_rules-{index}-validity": Validity.MONTHS,
            f"tier_rules-{index}-validity_months": "12",
            f"tier_rules-{index}-downgrade": Downgrade.TO_BASE,
            f"tier_rules-{index}-grace_days": "30",
            f"tier_rules-{index}-demote_between_reviews": "on",
        }
    )

    response = client.post(version_url(draft), data)

    assert response.status_code == 302
    gold.refresh_from_db()
    assert gold.validity == Validity.MONTHS
    assert gold.validity_months == 12
    assert gold.downgrade == Downgrade.TO_BASE
    assert gold.grace_days == 30
    assert gold.demote_between_reviews is True


def test_draft_inline_needs_months(ladder):
    client, _ = staff_client("editor", ["view_ruleversion", "change_ruleversion"])
    draft = copy_to_draft(RuleVersion.objects.get(number=1))
    gold = TierRule.objects.get(version=draft, tier__name="Gold")
    data = change_form_data(client.get(version_url(draft)))
    index = inline_index(data, "tier_rules", gold.pk)
    data[f"tier_rules-{index}-validity"] = Validity.MONTHS

    response = client.post(version_url(draft), data)

    assert response.status_code == 200
    assert "Enter how many months a hold on the tier lasts." in (
        response.content.decode()
    )
    gold.refresh_from_db()
    assert gold.validity == Validity.CONTINUOUS


def test_published_review_settings_read_only(ladder):
    client, _ = staff_client("editor", ["view_ruleversion", "change_ruleversion"])
    version = RuleVersion.objects.get(number=1)

    content = client.get(version_url(version)).content.decode()

    assert "Validity" in content
    assert "Drop between reviews" in content
    assert 'name="tier_rules-0-validity"' not in content
    assert 'name="tier_rules-0-grace_days"' not in content


# Review dates on members and in the tier history


@pytest.fixture
def reviewed_gold(tiers, store) -> Member:
    """Gold reviewed 12 months after noon on 31 January 2024, with 30 days of
    grace; the review finds no spend, so the member enters grace."""
    spec = standard_spec(tiers)
    gold = spec.tiers[2]
    gold.validity = Validity.MONTHS
    gold.validity_months = 12
    gold.grace_days = 30
    publish_spec(spec)
    member = make_member(store, "G-1", name="Gao Min")
    for day in range(26, 32):
        record(member, store, "purchase", local(2024, 1, day), "1000")
    evaluate([member.pk], as_of=local(2024, 1, 31, 12))
    evaluate([member.pk], as_of=local(2025, 2, 1))
    member.refresh_from_db()
    assert member.grace_until == local(2025, 3, 2, 12)
    return member


def test_member_review_dates_read_only(staff, reviewed_gold):
    url = reverse("admin:members_member_change", args=[reviewed_gold.pk])

    content = staff.get(url).content.decode()

    assert "Next review:" in content
    assert "Grace until:" in content
    assert "Jan. 31, 2025" in content
    assert "March 2, 2025" in content
    assert 'name="review_at' not in content
    assert 'name="grace_until' not in content


def test_tier_change_list_review_columns(staff, reviewed_gold, store):
    renewed = make_member(store, "R-1", name="Ren Hao")
    for day in range(26, 32):
        record(renewed, store, "purchase", local(2024, 1, day), "1000")
    evaluate([renewed.pk], as_of=local(2024, 1, 31, 12))
    for day in range(1, 7):
        record(renewed, store, "purchase", local(2025, 1, day), "1000")
    evaluate([renewed.pk], as_of=local(2025, 2, 1))

    response = staff.get(reverse("admin:tiers_tierchange_changelist"))

    content = response.content.decode()
    assert "column-review_at" in content
    assert "Kept at review" in content
    assert "Review failed, grace period started" in content
    assert "Jan. 31, 2026" in content  # Ren Hao's renewed review


# The evaluate_tiers summary


def test_command_prints_renewals_and_grace(tiers, store, capsys):
    spec = standard_spec(tiers)
    gold = spec.tiers[2]
    gold.validity = Validity.MONTHS
    gold.validity_months = 12
    gold.grace_days = 30
    publish_spec(spec)
    kept, lapsed = make_member(store, "K-1"), make_member(store, "L-1")
    for member in (kept, lapsed):
        for day in range(26, 32):
            record(member, store, "purchase", local(2024, 1, day), "1000")
    evaluate(as_of=local(2024, 1, 31, 12))
    for day in range(1, 7):
        record(kept, store, "purchase", local(2025, 1, day), "1000")

    call_command("evaluate_tiers", "--as-of", "2025-02-01", "--dry-run")
    dry_run = capsys.readouterr().out
    call_command("evaluate_tiers", "--as-of", "2025-02-01")
    output = capsys.readouterr().out

    assert "Reviews: 1 would be renewed, 1 would start a grace period." in dry_run
    assert "Reviews: 1 renewed, 1 started a grace period." in output
    assert "Gold: 2" in output
    lapsed.refresh_from_db()
    assert lapsed.grace_until == local(2025, 3, 2, 12)
