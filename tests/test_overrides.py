"""Manual tier overrides: the three modes, approval, history and the admin."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.conftest import local, make_member, record
from tiers.evaluation import evaluate, explain_member
from tiers.models import TierChange, TierOverride
from tiers.overrides import OverrideError, approve, reject, request_override

pytestmark = pytest.mark.django_db

Mode = TierOverride.Mode
Status = TierOverride.Status


@pytest.fixture
def alice(db) -> User:
    """The staff member who requests overrides."""
    return User.objects.create_superuser("alice", "alice@example.com", "pw-12345-x")


@pytest.fixture
def bob(db) -> User:
    """A second staff member, who approves what Alice requests."""
    return User.objects.create_superuser("bob", "bob@example.com", "pw-12345-x")


def tier_of(member) -> str:
    member.refresh_from_db()
    return member.tier.name


def bronze_member(store, external_id="B"):
    """A member with no activity, placed in Bronze on 1 January 2024."""
    member = make_member(store, external_id)
    evaluate([member.pk], as_of=local(2024, 1, 1))
    member.refresh_from_db()
    return member


def test_fixed_holds_tier_until_date(ladder, store, alice):
    member = bronze_member(store)

    override = request_override(
        member,
        ladder["gold"],
        Mode.FIXED,
        "Compensation for the lost order",
        alice,
        until=local(2024, 3, 1),
        as_of=local(2024, 1, 10),
    )

    assert override.status == Status.ACTIVE
    assert tier_of(member) == "Gold"
    evaluate([member.pk], as_of=local(2024, 2, 1))
    assert tier_of(member) == "Gold"

    evaluate([member.pk], as_of=local(2024, 3, 1, 0, 0, 1))

    assert tier_of(member) == "Bronze"
    drop = TierChange.objects.filter(member=member).first()
    assert drop.reason == TierChange.Reason.DEMOTION
    assert "override" not in drop.explanation


def test_fixed_promotion_records_who_and_why(ladder, store, alice):
    member = bronze_member(store)

    request_override(
        member,
        ladder["gold"],
        Mode.FIXED,
        "Compensation for the lost order",
        alice,
        until=local(2024, 3, 1),
        as_of=local(2024, 1, 10),
    )

    change = TierChange.objects.filter(member=member).first()
    assert change.reason == TierChange.Reason.OVERRIDE
    assert change.from_tier == ladder["bronze"]
    assert change.to_tier == ladder["gold"]
    assert TierChange.objects.filter(member=member).count() == 2
    recorded = change.explanation["override"]
    assert recorded["mode"] == Mode.FIXED
    assert recorded["reason"] == "Compensation for the lost order"
    assert recorded["requested_by"] == "alice"
    assert recorded["approved_by"] is None


def silver_member(store, external_id="S"):
    """A member placed in Silver on 6 January 2024 by a ¥1,000 purchase."""
    member = make_member(store, external_id)
    record(member, store, "purchase", local(2024, 1, 5), "1000")
    evaluate([member.pk], as_of=local(2024, 1, 6))
    member.refresh_from_db()
    return member


@pytest.mark.parametrize("mode", [Mode.FIXED, Mode.FLOOR])
def test_override_at_current_tier_recorded(ladder, store, alice, mode):
    member = silver_member(store)
    tier_since = member.tier_since

    request_override(
        member,
        ladder["silver"],
        mode,
        "Partner employee",
        alice,
        until=local(2024, 6, 1),
        as_of=local(2024, 1, 10),
    )

    change = TierChange.objects.filter(member=member).first()
    assert change.reason == TierChange.Reason.OVERRIDE
    assert change.from_tier == ladder["silver"]
    assert change.to_tier == ladder["silver"]
    assert change.as_of == local(2024, 1, 10)
    assert change.explanation["override"]["mode"] == mode
    assert change.explanation["override"]["requested_by"] == "alice"
    assert change.explanation["override"]["reason"] == "Partner employee"
    assert change.explanation["tier_name"] == "Silver"
    member.refresh_from_db()
    assert member.tier_since == tier_since


def test_fixed_can_hold_member_below_rules(ladder, store, alice):
    member = make_member(store, "S")
    record(member, store, "purchase", local(2024, 1, 5), "1000")
    evaluate([member.pk], as_of=local(2024, 1, 6))
    assert tier_of(member) == "Silver"

    request_override(
        member,
        ladder["bronze"],
        Mode.FIXED,
        "Account under fraud review",
        alice,
        until=local(2024, 2, 1),
        as_of=local(2024, 1, 10),
    )

    assert tier_of(member) == "Bronze"
    evaluate([member.pk], as_of=local(2024, 2, 2))
    assert tier_of(member) == "Silver"


def test_floor_stops_drop_but_allows_promotion(ladder, store, alice):
    member = make_member(store, "F")
    record(member, store, "purchase", local(2024, 1, 5), "1000")
    evaluate([member.pk], as_of=local(2024, 1, 6))
    request_override(
        member,
        ladder["silver"],
        Mode.FLOOR,
        "Partner employee",
        alice,
        as_of=local(2024, 1, 10),
    )
    record(member, store, "refund", local(2024, 1, 20), "-1000")

    evaluate([member.pk], as_of=local(2024, 1, 21))

    assert tier_of(member) == "Silver"
    explanation = explain_member(member, as_of=local(2024, 1, 21)).explanation
    assert explanation["override"]["mode"] == Mode.FLOOR

    for day in range(1, 7):
        record(member, store, "purchase", local(2024, 2, day), "1000")
    evaluate([member.pk], as_of=local(2024, 2, 10))

    assert tier_of(member) == "Gold"
    explanation = explain_member(member, as_of=local(2024, 2, 10)).explanation
    assert "override" not in explanation


def test_floor_raises_lower_member_at_once(ladder, store, alice):
    member = bronze_member(store)

    request_override(
        member,
        ladder["silver"],
        Mode.FLOOR,
        "Partner employee",
        alice,
        as_of=local(2024, 1, 10),
    )

    assert tier_of(member) == "Silver"


def test_one_off_changes_now_then_rules_decide(ladder, store, alice):
    member = bronze_member(store)

    override = request_override(
        member,
        ladder["gold"],
        Mode.ONE_OFF,
        "Goodwill after the delivery complaint",
        alice,
        as_of=local(2024, 1, 10),
    )

    assert override.status == Status.ENDED
    assert tier_of(member) == "Gold"
    change = TierChange.objects.filter(member=member).first()
    assert change.reason == TierChange.Reason.OVERRIDE
    assert change.from_tier == ladder["bronze"]
    assert change.explanation["override"]["requested_by"] == "alice"
    assert change.explanation["override"]["reason"] == (
        "Goodwill after the delivery complaint"
    )

    evaluate([member.pk], as_of=local(2024, 1, 11))

    assert tier_of(member) == "Bronze"


def test_one_off_tier_since_is_request_moment(ladder, store, alice):
    member = bronze_member(store)

    request_override(
        member,
        ladder["gold"],
        Mode.ONE_OFF,
        "Goodwill after the delivery complaint",
        alice,
        as_of=local(2024, 1, 10),
    )

    member.refresh_from_db()
    assert member.tier_since == local(2024, 1, 10)


def test_fixed_tier_since_is_request_moment(ladder, store, alice):
    member = bronze_member(store)

    request_override(
        member,
        ladder["gold"],
        Mode.FIXED,
        "Campaign winner",
        alice,
        until=local(2024, 6, 1),
        as_of=local(2024, 1, 10),
    )

    member.refresh_from_db()
    assert member.tier_since == local(2024, 1, 10)


def test_new_override_ends_active_one(ladder, store, alice):
    member = bronze_member(store)
    first = request_override(
        member,
        ladder["silver"],
        Mode.FLOOR,
        "Partner employee",
        alice,
        as_of=local(2024, 1, 10),
    )

    request_override(
        member,
        ladder["gold"],
        Mode.FIXED,
        "Campaign winner",
        alice,
        until=local(2024, 6, 1),
        as_of=local(2024, 1, 11),
    )

    first.refresh_from_db()
    assert first.status == Status.ENDED
    assert first.ended_at == local(2024, 1, 11)
    assert first.ended_by == alice
    assert first.end_reason == TierOverride.EndReason.REPLACED
    assert TierOverride.objects.filter(member=member, status=Status.ACTIVE).count() == 1
    latest = first.history.order_by("-history_date", "-history_id").first()
    assert latest.history_change_reason.startswith("replaced by override")


def test_upgrade_to_flagged_tier_waits(ladder, store, alice):
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    member = bronze_member(store)

    for tier in (ladder["gold"], ladder["platinum"]):
        override = request_override(
            member,
            tier,
            Mode.ONE_OFF,
            "VIP guest",
            alice,
            as_of=local(2024, 1, 10),
        )
        assert override.status == Status.PENDING
    assert tier_of(member) == "Bronze"

    below = request_override(member, ladder["silver"], Mode.ONE_OFF, "VIP guest", alice)

    assert below.status == Status.ENDED
    assert tier_of(member) == "Silver"


def test_downgrade_to_flagged_tier_applies_at_once(ladder, store, alice):
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    member = bronze_member(store)
    member.tier = ladder["platinum"]
    member.save()

    override = request_override(
        member, ladder["gold"], Mode.ONE_OFF, "Corrected by hand", alice
    )

    assert override.status == Status.ENDED
    assert tier_of(member) == "Gold"


def gold_by_hand(ladder, store):
    """A member put in Gold by hand, which the rules alone do not give."""
    member = bronze_member(store)
    member.tier = ladder["gold"]
    member.save()
    return member


@pytest.mark.parametrize("mode", [Mode.FIXED, Mode.FLOOR])
def test_hold_at_current_flagged_tier_waits(ladder, store, alice, mode):
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    member = gold_by_hand(ladder, store)

    override = request_override(
        member,
        ladder["gold"],
        mode,
        "VIP guest",
        alice,
        until=local(2024, 6, 1),
        as_of=local(2024, 1, 10),
    )

    assert override.status == Status.PENDING
    assert not TierChange.objects.filter(reason=TierChange.Reason.OVERRIDE).exists()


def test_floor_below_current_flagged_tier_waits(ladder, store, alice):
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    member = bronze_member(store)
    member.tier = ladder["platinum"]
    member.save()

    override = request_override(
        member,
        ladder["gold"],
        Mode.FLOOR,
        "VIP guest",
        alice,
        as_of=local(2024, 1, 10),
    )

    assert override.status == Status.PENDING


def test_one_off_at_current_flagged_tier_waits(ladder, store, alice):
    # A one-off at the current tier restarts its review period, which
    # extends a flagged tier, so it needs a second person too.
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    member = gold_by_hand(ladder, store)

    override = request_override(
        member,
        ladder["gold"],
        Mode.ONE_OFF,
        "Review date reset",
        alice,
        as_of=local(2024, 1, 10),
    )

    assert override.status == Status.PENDING
    assert tier_of(member) == "Gold"


def test_fixed_downgrade_to_flagged_tier_applies(ladder, store, alice):
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    member = bronze_member(store)
    member.tier = ladder["platinum"]
    member.save()

    override = request_override(
        member,
        ladder["gold"],
        Mode.FIXED,
        "Corrected by hand",
        alice,
        until=local(2024, 6, 1),
        as_of=local(2024, 1, 10),
    )

    assert override.status == Status.ACTIVE
    assert tier_of(member) == "Gold"


def test_requester_cannot_approve(ladder, store, alice, bob):
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    member = bronze_member(store)
    override = request_override(
        member,
        ladder["gold"],
        Mode.FIXED,
        "Campaign winner",
        alice,
        until=local(2024, 6, 1),
        as_of=local(2024, 1, 10),
    )

    with pytest.raises(OverrideError, match="another person must approve"):
        approve(override, alice, as_of=local(2024, 1, 11))

    override.refresh_from_db()
    assert override.status == Status.PENDING
    approve(override, bob, as_of=local(2024, 1, 11))
    assert override.status == Status.ACTIVE
    assert override.approved_by == bob
    assert tier_of(member) == "Gold"
    change = TierChange.objects.filter(member=member).first()
    assert change.explanation["override"]["approved_by"] == "bob"
    assert change.explanation["override"]["requested_by"] == "alice"


def test_approve_twice_is_rejected(ladder, store, alice, bob):
    member = bronze_member(store)
    override = request_override(member, ladder["gold"], Mode.ONE_OFF, "VIP", alice)

    with pytest.raises(OverrideError, match="not waiting for approval"):
        approve(override, bob)


def test_approve_expired_floor_raises(ladder, store, alice, bob):
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    member = bronze_member(store)
    override = request_override(
        member,
        ladder["gold"],
        Mode.FLOOR,
        "Campaign winner",
        alice,
        until=local(2024, 2, 1),
        as_of=local(2024, 1, 10),
    )

    with pytest.raises(OverrideError, match="before it was approved"):
        approve(override, bob, as_of=local(2024, 2, 2))

    override.refresh_from_db()
    assert override.status == Status.PENDING
    assert tier_of(member) == "Bronze"


def test_reject_records_who_and_why(ladder, store, alice, bob):
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    member = bronze_member(store)
    override = request_override(member, ladder["gold"], Mode.ONE_OFF, "VIP", alice)

    with pytest.raises(OverrideError, match="reason is required"):
        reject(override, bob, " ")
    reject(override, bob, "No purchase history", as_of=local(2024, 1, 12))

    override.refresh_from_db()
    assert override.status == Status.REJECTED
    assert override.rejected_by == bob
    assert override.rejected_at == local(2024, 1, 12)
    assert override.rejection_reason == "No purchase history"
    assert tier_of(member) == "Bronze"


@pytest.mark.parametrize(
    ("mode", "reason", "until", "message"),
    [
        (Mode.ONE_OFF, "", None, "reason is required"),
        (Mode.FLOOR, "   ", None, "reason is required"),
        (Mode.FIXED, "Campaign", None, "needs an end date"),
        (Mode.FIXED, "Campaign", local(2024, 1, 9), "not in the future"),
        ("forever", "Campaign", None, "Invalid override mode"),
    ],
)
def test_invalid_request_raises(ladder, store, alice, mode, reason, until, message):
    member = bronze_member(store)

    with pytest.raises(OverrideError, match=message):
        request_override(
            member,
            ladder["gold"],
            mode,
            reason,
            alice,
            until=until,
            as_of=local(2024, 1, 10),
        )

    assert not TierOverride.objects.exists()


def test_history_rows_name_each_user(ladder, store, alice, bob):
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    member = bronze_member(store)
    override = request_override(
        member,
        ladder["gold"],
        Mode.FIXED,
        "Campaign winner",
        alice,
        until=local(2024, 6, 1),
        as_of=local(2024, 1, 10),
    )
    approve(override, bob, as_of=local(2024, 1, 11))

    rows = list(override.history.order_by("history_date", "history_id"))

    assert [row.status for row in rows] == [Status.PENDING, Status.ACTIVE]
    assert [row.history_user for row in rows] == [alice, bob]
    assert [row.history_change_reason for row in rows] == ["requested", "activated"]
    assert rows[-1].reason == "Campaign winner"


def test_evaluation_loads_overrides_once_per_chunk(ladder, store, alice):
    members = [bronze_member(store, f"M{index}") for index in range(5)]
    for member in members[:3]:
        request_override(
            member,
            ladder["silver"],
            Mode.FLOOR,
            "Partner employee",
            alice,
            as_of=local(2024, 1, 10),
        )

    with CaptureQueriesContext(connection) as queries:
        evaluate([m.pk for m in members], as_of=local(2024, 1, 20), chunk_size=10)

    override_queries = [
        query["sql"] for query in queries if "tiers_tieroverride" in query["sql"]
    ]
    assert len(override_queries) == 1


def test_expired_floor_is_ignored(ladder, store, alice):
    member = bronze_member(store)
    request_override(
        member,
        ladder["silver"],
        Mode.FLOOR,
        "Partner employee",
        alice,
        until=local(2024, 2, 1),
        as_of=local(2024, 1, 10),
    )

    evaluate([member.pk], as_of=local(2024, 2, 1))

    assert tier_of(member) == "Bronze"


def action_data(action: str, override: TierOverride, reason: str = "") -> dict:
    return {
        "action": action,
        "_selected_action": [override.pk],
        "index": 0,
        "reason": reason,
    }


def test_admin_add_then_approve(ladder, store, alice, bob):
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    member = bronze_member(store)
    requester = Client()
    requester.force_login(alice)

    response = requester.post(
        reverse("admin:tiers_tieroverride_add"),
        {
            "member": member.pk,
            "tier": ladder["gold"].pk,
            "mode": Mode.ONE_OFF,
            "reason": "VIP guest",
        },
    )

    assert response.status_code == 302
    override = TierOverride.objects.get()
    assert override.status == Status.PENDING
    assert override.requested_by == alice

    changelist = reverse("admin:tiers_tieroverride_changelist")
    response = requester.post(
        changelist, action_data("approve_selected", override), follow=True
    )
    assert "another person must approve" in response.content.decode()
    override.refresh_from_db()
    assert override.status == Status.PENDING

    approver = Client()
    approver.force_login(bob)
    response = approver.post(changelist, action_data("approve_selected", override))

    assert response.status_code == 302
    override.refresh_from_db()
    assert override.status == Status.ENDED
    assert override.approved_by == bob
    assert tier_of(member) == "Gold"
    change = TierChange.objects.filter(member=member).first()
    assert change.reason == TierChange.Reason.OVERRIDE


def test_admin_add_requires_reason(ladder, store, alice):
    member = bronze_member(store)
    client = Client()
    client.force_login(alice)

    response = client.post(
        reverse("admin:tiers_tieroverride_add"),
        {
            "member": member.pk,
            "tier": ladder["gold"].pk,
            "mode": Mode.ONE_OFF,
            "reason": "",
        },
    )

    assert response.status_code == 200
    assert not TierOverride.objects.exists()


def test_admin_reject_uses_action_reason(ladder, store, alice, bob):
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    member = bronze_member(store)
    override = request_override(member, ladder["gold"], Mode.ONE_OFF, "VIP", alice)
    client = Client()
    client.force_login(bob)

    client.post(
        reverse("admin:tiers_tieroverride_changelist"),
        action_data("reject_selected", override, reason="No purchase history"),
    )

    override.refresh_from_db()
    assert override.status == Status.REJECTED
    assert override.rejection_reason == "No purchase history"


def test_admin_changelist_query_count(
    ladder, store, alice, bob, django_assert_max_num_queries
):
    for index in range(5):
        member = bronze_member(store, f"L{index}")
        request_override(member, ladder["silver"], Mode.FLOOR, "Partner", alice)
    client = Client()
    client.force_login(bob)

    # Session, user, the count, the page of rows joined to member, tier and
    # users, and the filter choices for tiers: a fixed number, not one per row.
    with django_assert_max_num_queries(12):
        response = client.get(reverse("admin:tiers_tieroverride_changelist"))

    assert response.status_code == 200


def test_member_page_lists_overrides(ladder, store, alice, bob):
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    member = bronze_member(store)
    rejected = request_override(
        member, ladder["gold"], Mode.ONE_OFF, "VIP guest", alice
    )
    reject(rejected, bob, "No purchase history")
    replaced = request_override(
        member, ladder["silver"], Mode.FLOOR, "Partner employee", alice
    )
    pending = request_override(
        member,
        ladder["gold"],
        Mode.FIXED,
        "Campaign winner",
        alice,
        until=local(2030, 1, 1),
    )
    approve(pending, bob)
    client = Client(headers={"accept-language": "en"})
    client.force_login(bob)

    response = client.get(reverse("admin:members_member_change", args=[member.pk]))

    content = response.content.decode()
    assert response.status_code == 200
    start = content.index('id="tier_overrides-group"')
    inline = content[start : content.index("</table>", start)]
    assert inline.count("<tr") == 4  # the header and one row per override
    assert "VIP guest" in inline
    assert "Rejected: bob, " in inline
    assert "No purchase history" in inline
    assert "Partner employee" in inline
    assert "Replaced by a newer override: bob, " in inline
    assert "Campaign winner" in inline
    assert "Approved: bob, " in inline
    assert "Active" in inline
    assert inline.count("alice, ") == 3
    replaced.refresh_from_db()
    assert replaced.end_reason == TierOverride.EndReason.REPLACED


def test_member_page_override_queries_flat(ladder, store, alice, bob):
    member = bronze_member(store)
    client = Client()
    client.force_login(bob)
    url = reverse("admin:members_member_change", args=[member.pk])
    request_override(member, ladder["silver"], Mode.FLOOR, "Partner", alice)
    with CaptureQueriesContext(connection) as one:
        client.get(url)
    for _ in range(3):
        request_override(member, ladder["silver"], Mode.FLOOR, "Partner", alice)

    with CaptureQueriesContext(connection) as four:
        client.get(url)

    assert len(four.captured_queries) == len(one.captured_queries)


def test_admin_override_page_shows_decision(ladder, store, alice, bob):
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    member = bronze_member(store)
    override = request_override(member, ladder["gold"], Mode.ONE_OFF, "VIP", alice)
    reject(override, bob, "No purchase history")
    client = Client(headers={"accept-language": "en"})
    client.force_login(bob)

    response = client.get(
        reverse("admin:tiers_tieroverride_change", args=[override.pk])
    )

    content = response.content.decode()
    assert response.status_code == 200
    assert "Rejected by:" in content
    assert "Reason for rejecting:" in content
    assert "No purchase history" in content
    assert 'name="reason"' not in content
