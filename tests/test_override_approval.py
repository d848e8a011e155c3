"""Which one-off overrides wait for a second approver.

Gold is the lowest tier marked ``override_needs_approval`` unless a test
sets another tier. Alice requests overrides and Bob approves them.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from tests.conftest import local, make_member
from tiers.evaluation import evaluate
from tiers.models import Tier, TierChange, TierOverride
from tiers.overrides import approve, needs_approval, request_override

pytestmark = pytest.mark.django_db

Mode = TierOverride.Mode
Status = TierOverride.Status
REQUESTED_AT = local(2024, 1, 10)


@pytest.fixture
def alice(db) -> User:
    return User.objects.create_superuser("alice", "alice@example.com", "pw-12345-x")


@pytest.fixture
def bob(db) -> User:
    return User.objects.create_superuser("bob", "bob@example.com", "pw-12345-x")


@pytest.fixture
def gold_flagged(ladder) -> dict[str, Tier]:
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    return ladder


def member_placed_in(store, tier: Tier):
    """A member without activity, evaluated into Bronze and then put in ``tier`` by hand."""
    member = make_member(store, "M-1")
    evaluate([member.pk], as_of=local(2024, 1, 1))
    member.refresh_from_db()
    member.tier = tier
    member.save()
    return member


def one_off(member, tier: Tier, user: User) -> TierOverride:
    return request_override(
        member, tier, Mode.ONE_OFF, "Review date reset", user, as_of=REQUESTED_AT
    )


@pytest.mark.parametrize("tier_name", ["gold", "platinum"])
def test_one_off_at_current_flagged_tier_waits(gold_flagged, store, alice, tier_name):
    tier = gold_flagged[tier_name]
    member = member_placed_in(store, tier)
    review_before = member.review_at

    override = one_off(member, tier, alice)

    assert override.status == Status.PENDING
    member.refresh_from_db()
    assert member.tier == tier
    assert member.review_at == review_before
    assert not TierChange.objects.filter(reason=TierChange.Reason.OVERRIDE).exists()


def test_one_off_at_current_unflagged_tier_applies(gold_flagged, store, alice):
    member = member_placed_in(store, gold_flagged["silver"])

    override = one_off(member, gold_flagged["silver"], alice)

    assert override.status == Status.ENDED
    assert TierChange.objects.filter(reason=TierChange.Reason.OVERRIDE).count() == 1


def test_one_off_at_current_tier_without_flags_applies(ladder, store, alice):
    member = member_placed_in(store, ladder["gold"])

    override = one_off(member, ladder["gold"], alice)

    assert override.status == Status.ENDED


def test_one_off_downgrade_to_flagged_tier_applies(gold_flagged, store, alice):
    member = member_placed_in(store, gold_flagged["platinum"])

    override = one_off(member, gold_flagged["gold"], alice)

    assert override.status == Status.ENDED
    member.refresh_from_db()
    assert member.tier == gold_flagged["gold"]


def test_one_off_at_current_tier_applies_after_approval(
    gold_flagged, store, alice, bob
):
    member = member_placed_in(store, gold_flagged["gold"])
    override = one_off(member, gold_flagged["gold"], alice)

    approve(override, bob, as_of=REQUESTED_AT)

    assert override.status == Status.ENDED
    assert override.approved_by == bob
    change = TierChange.objects.get(reason=TierChange.Reason.OVERRIDE)
    assert change.to_tier == gold_flagged["gold"]


@pytest.mark.parametrize(
    ("current", "target", "mode", "expected"),
    [
        ("gold", "gold", Mode.ONE_OFF, True),
        ("gold", "gold", Mode.FIXED, True),
        ("gold", "gold", Mode.FLOOR, True),
        ("platinum", "gold", Mode.ONE_OFF, False),
        ("platinum", "gold", Mode.FIXED, False),
        ("platinum", "gold", Mode.FLOOR, True),
        ("silver", "silver", Mode.ONE_OFF, False),
        ("bronze", "gold", Mode.ONE_OFF, True),
    ],
)
def test_needs_approval_table(gold_flagged, store, current, target, mode, expected):
    member = member_placed_in(store, gold_flagged[current])

    assert needs_approval(member, gold_flagged[target], mode) is expected
