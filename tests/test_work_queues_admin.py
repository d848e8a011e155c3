"""The work queues in the admin: the near promotion and at-risk lists, their
filters, and the bulk actions (reminder, review extension, Excel export).

Silver needs ¥1,000 of spend in the last 365 days and is reviewed yearly.
Members (all refreshed as of now):

- Nina: Bronze, ¥850 in the last ten days, 85 %, Silver in 22 days.
- Noah: Bronze, ¥800 in the last ten days, 80 %, Silver in 30 days.
- Nora: Bronze, ¥820 but ¥600 of it 300 days ago, 82 %, no date: ¥220 per
  90 days never fills a 365-day window with ¥1,000.
- Fred: Bronze, ¥100, far from Silver.
- Rita: Silver with exactly ¥1,000, all spent 300 days ago, review in 100
  days. She meets the rules today, but by the review ¥274 has left the
  window, so she is at risk.

Staff: Quinn works the queues (view outlooks, change members, export);
Vera may only view them.
"""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from openpyxl import load_workbook

from members.models import AuditAction, AuditEvent, Member, OutboxMessage
from members.privacy import mask_name
from tests.conftest import make_member, publish_spec, record
from tiers import admin_queues
from tiers.models import MemberOutlook, ReviewExtension, Validity
from tiers.outlook import refresh_outlooks
from tiers.rules import Need, TierSpec, VersionSpec, all_of

pytestmark = pytest.mark.django_db

QUEUE_URL = "admin:tiers_memberoutlook_changelist"
WORKER_PERMISSIONS = ["view_memberoutlook", "change_member", "export"]


def staff_client(username: str, codenames: list[str]) -> tuple[Client, User]:
    user = User.objects.create_user(
        username, f"{username}@example.com", "pw-12345-x", is_staff=True
    )
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    # English, so Django's own admin text is predictable in assertions.
    client = Client(headers={"accept-language": "en"})
    client.force_login(user)
    return client, user


@pytest.fixture
def quinn() -> tuple[Client, User]:
    return staff_client("quinn", WORKER_PERMISSIONS)


@pytest.fixture
def vera() -> tuple[Client, User]:
    return staff_client("vera", ["view_memberoutlook"])


@pytest.fixture(autouse=True)
def in_app_and_email(settings):
    settings.CRM_NOTIFICATION_BACKENDS = ["in_app", "email"]
    settings.CRM_NEAR_PROMOTION_PERCENT = 80


@pytest.fixture
def people(tiers, store) -> dict[str, Member]:
    publish_spec(
        VersionSpec(
            tiers=[
                TierSpec(tiers["bronze"]),
                TierSpec(
                    tiers["silver"],
                    all_of(Need("net_spend", 1000, days=365)),
                    validity=Validity.MONTHS,
                    validity_months=12,
                ),
                TierSpec(
                    tiers["gold"], all_of(Need("net_spend", 99999, window="lifetime"))
                ),
            ]
        )
    )
    now = timezone.now()
    ago = {days: now - dt.timedelta(days=days) for days in (3, 300)}
    members = {}
    for name, spends in {
        "nina": [(3, "850")],
        "noah": [(3, "800")],
        "nora": [(300, "600"), (3, "220")],
        "fred": [(3, "100")],
        "rita": [(300, "1000")],
    }.items():
        member = make_member(store, name.upper(), name=name.capitalize())
        member.language = "en"
        member.save()
        for days, amount in spends:
            record(member, store, "purchase", ago[days], amount)
        members[name] = member
    rita = members["rita"]
    rita.tier = tiers["silver"]
    rita.tier_since = ago[300]
    rita.review_at = now + dt.timedelta(days=100)
    rita.save()
    refresh_outlooks()
    return members


def listed(client: Client, **params: str) -> list[int]:
    response = client.get(reverse(QUEUE_URL), params)
    assert response.status_code == 200
    return [row.member_id for row in response.context["cl"].result_list]


def post_action(client: Client, action: str, members: list[Member], **data):
    return client.post(
        reverse(QUEUE_URL) + data.pop("query", ""),
        {
            "action": action,
            "_selected_action": [member.pk for member in members],
            "index": "0",
            **data,
        },
    )


# The lists


def test_near_promotion_ranked_by_projected_date(people, quinn):
    client, _ = quinn

    ids = listed(client)

    # Nina and Noah by their date, Nora without a date last; Fred is too far
    # and Rita is in Silver already.
    assert ids == [people["nina"].pk, people["noah"].pk, people["nora"].pk]
    nina = MemberOutlook.objects.get(member=people["nina"])
    assert nina.progress == 85
    assert nina.projected_on == timezone.localdate() + dt.timedelta(days=22)


def test_at_risk_list(people, quinn):
    client, _ = quinn

    ids = listed(client, queue="at_risk")

    assert ids == [people["rita"].pk]
    rita = MemberOutlook.objects.get(member=people["rita"])
    assert rita.retention_progress == 100
    assert rita.explanation["review"]["kept"] is False


def test_list_shows_missing_and_title(people, quinn):
    client, _ = quinn

    near = client.get(reverse(QUEUE_URL)).content.decode()
    at_risk = client.get(reverse(QUEUE_URL), {"queue": "at_risk"}).content.decode()

    assert "<h1>Near promotion</h1>" in near
    assert "¥150 more net spend" in near
    assert "<h1>At risk</h1>" in at_risk
    # ¥1,000 * 265/365 = ¥726.02 is left in the window at the review.
    assert "¥273.98 more net spend" in at_risk


def test_share_and_tier_filters(people, quinn, tiers):
    client, _ = quinn

    at_85 = listed(client, share="85")
    at_70 = listed(client, share="70")
    gold_next = listed(client, next_tier__id__exact=str(tiers["gold"].pk))

    assert at_85 == [people["nina"].pk]
    assert people["fred"].pk not in at_70
    assert set(at_70) == {people["nina"].pk, people["noah"].pk, people["nora"].pk}
    assert gold_next == []


def test_invalid_share_falls_back_to_default(people, quinn):
    client, _ = quinn

    assert listed(client, share="abc") == listed(client)


def test_review_within_filter(people, quinn):
    client, _ = quinn

    assert listed(client, queue="at_risk", review_within="90") == []
    assert listed(client, queue="at_risk", review_within="7") == []
    # Only Rita has a review date at all.
    assert listed(client, queue="at_risk") == [people["rita"].pk]


def test_list_needs_view_permission(people):
    client, _ = staff_client("otto", ["view_member"])

    response = client.get(reverse(QUEUE_URL))

    assert response.status_code == 403


def test_list_query_count(people, quinn, store, django_assert_num_queries):
    client, _ = quinn
    # Nine queries:
    # - the session and the user,
    # - the user's permissions and its groups' permissions,
    # - the tiers for the "next tier" and "tier" filters (2),
    # - the capped row count, the rows joined with tier and next tier, and
    #   the members of those rows.
    with django_assert_num_queries(9):
        client.get(reverse(QUEUE_URL))

    for number in range(30):
        member = make_member(store, f"MORE-{number}")
        record(member, store, "purchase", timezone.now(), "900")
    refresh_outlooks()

    with django_assert_num_queries(9):
        assert len(listed(client)) == 33


def test_list_count_is_capped(people, quinn, monkeypatch):
    client, _ = quinn
    monkeypatch.setattr(admin_queues, "COUNT_CAP", 1)

    response = client.get(reverse(QUEUE_URL))

    # Three members are near promotion; the count stops at the cap plus one.
    assert response.context["cl"].result_count == 2


def test_detail_page_explains_figures(people, quinn):
    client, _ = quinn
    url = reverse("admin:tiers_memberoutlook_change", args=[people["nora"].pk])

    html = client.get(url).content.decode()

    assert "Next tier: Silver, 82 %" in html
    assert "The pace cannot fill the window" in html


# Reminders


def test_reminder_sent_once_on_double_submit(people, quinn):
    client, _ = quinn
    chosen = [people["nina"], people["noah"]]

    first = post_action(client, "send_reminders", chosen)
    second = post_action(client, "send_reminders", chosen)

    assert first.status_code == 302
    assert second.status_code == 302
    nudges = OutboxMessage.objects.filter(topic=OutboxMessage.Topic.NUDGE)
    # One message per member and backend (in-app and e-mail).
    assert nudges.filter(member=people["nina"]).count() == 2
    assert nudges.filter(member=people["noah"]).count() == 2
    assert nudges.count() == 4
    notices = [
        str(message) for message in client.get(reverse(QUEUE_URL)).context["messages"]
    ]
    assert any("already had a reminder today" in notice for notice in notices)


def test_reminder_text(people, quinn):
    client, _ = quinn

    post_action(client, "send_reminders", [people["nina"]])
    post_action(client, "send_reminders", [people["rita"]], query="?queue=at_risk")

    nina = OutboxMessage.objects.get(member=people["nina"], channel="in_app")
    rita = OutboxMessage.objects.get(member=people["rita"], channel="in_app")
    assert nina.params["goal"] == "reach"
    assert nina.params["tier"] == "Silver"
    assert (
        nina.params["projected_on"]
        == (timezone.localdate() + dt.timedelta(days=22)).isoformat()
    )
    assert rita.params["goal"] == "keep"
    assert rita.key.startswith(f"nudge:{people['rita'].pk}:")


def test_reminder_needs_member_change_permission(people, vera):
    client, _ = vera

    post_action(client, "send_reminders", [people["nina"]])

    assert not OutboxMessage.objects.exists()


# Extending the review


def test_extension_asks_for_days_and_reason(people, quinn):
    client, _ = quinn

    response = post_action(
        client, "extend_reviews", [people["rita"]], query="?queue=at_risk"
    )

    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="days"' in html
    assert 'name="reason"' in html
    # The member is named as str(member) names it: masked name and id.
    assert str(people["rita"]) in html


def test_extension_moves_review_and_is_audited(people, quinn):
    client, user = quinn
    rita = people["rita"]
    before = rita.review_at

    response = post_action(
        client,
        "extend_reviews",
        [rita],
        apply="1",
        days="30",
        reason="Store closed for renovation",
        query="?queue=at_risk",
    )

    assert response.status_code == 302
    rita.refresh_from_db()
    assert rita.review_at == before + dt.timedelta(days=30)
    extension = ReviewExtension.objects.get(member=rita)
    assert extension.previous_review_at == before
    assert extension.review_at == before + dt.timedelta(days=30)
    assert extension.extended_by == user
    assert extension.reason == "Store closed for renovation"
    assert extension.tier == rita.tier
    # The queue shows the new date at once.
    assert MemberOutlook.objects.get(member=rita).review_at == rita.review_at
    notices = [str(m) for m in client.get(reverse(QUEUE_URL)).context["messages"]]
    assert "Extended the review of 1 member." in notices


def test_extension_refuses_member_without_review(people, quinn):
    client, _ = quinn
    nina = people["nina"]

    post_action(client, "extend_reviews", [nina], apply="1", days="30", reason="Asked")

    nina.refresh_from_db()
    assert nina.review_at is None
    assert not ReviewExtension.objects.exists()
    notices = [str(m) for m in client.get(reverse(QUEUE_URL)).context["messages"]]
    assert "1 member has no review date and was left unchanged." in notices


def test_extension_of_passed_review_starts_from_now(people, quinn):
    client, _ = quinn
    rita = people["rita"]
    rita.review_at = timezone.now() - dt.timedelta(days=2)
    rita.save()

    started = timezone.now()
    post_action(
        client,
        "extend_reviews",
        [rita],
        apply="1",
        days="10",
        reason="Hospital",
        query="?queue=at_risk",
    )

    rita.refresh_from_db()
    assert rita.review_at >= started + dt.timedelta(days=10)
    assert rita.review_at <= timezone.now() + dt.timedelta(days=10)


@pytest.mark.parametrize("days", ["0", "366", "ten"])
def test_extension_rejects_days_out_of_range(people, quinn, days):
    client, _ = quinn
    before = people["rita"].review_at

    response = post_action(
        client,
        "extend_reviews",
        [people["rita"]],
        apply="1",
        days=days,
        reason="x",
        query="?queue=at_risk",
    )

    assert response.status_code == 200
    assert response.context["form"].errors["days"]
    people["rita"].refresh_from_db()
    assert people["rita"].review_at == before
    assert not ReviewExtension.objects.exists()


def test_extension_needs_reason(people, quinn):
    client, _ = quinn

    response = post_action(
        client,
        "extend_reviews",
        [people["rita"]],
        apply="1",
        days="5",
        reason="  ",
        query="?queue=at_risk",
    )

    assert response.status_code == 200
    assert response.context["form"].errors["reason"]
    assert not ReviewExtension.objects.exists()


def test_extension_needs_member_change_permission(people, vera):
    client, _ = vera
    before = people["rita"].review_at

    post_action(
        client,
        "extend_reviews",
        [people["rita"]],
        apply="1",
        days="5",
        reason="x",
        query="?queue=at_risk",
    )

    people["rita"].refresh_from_db()
    assert people["rita"].review_at == before


# Export


def test_export_opens_in_openpyxl(people):
    client, _ = staff_client("lead", [*WORKER_PERMISSIONS, "view_personal_data"])
    nina = people["nina"]
    nina.name = '=HYPERLINK("http://example.com","Nina")'
    nina.save()

    response = post_action(client, "export_xlsx", [nina, people["noah"]])

    assert response.status_code == 200
    assert response["Content-Type"].startswith(
        "application/vnd.openxmlformats-officedocument"
    )
    sheet = load_workbook(io.BytesIO(response.content)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:5] == ("Member ID", "Member", "Tier", "Next tier", "Progress (%)")
    # In the queue's order: Nina reaches Silver first.
    assert [row[0] for row in rows[1:]] == [nina.pk, people["noah"].pk]
    assert rows[1][2:5] == ("Bronze", "Silver", 85)
    assert rows[1][6] == "¥150 more net spend"
    assert rows[1][8] == "no"
    # The name is stored as text, never as a formula.
    name_cell = sheet.cell(row=2, column=2)
    assert name_cell.data_type == "s"
    assert name_cell.value == nina.name


def test_export_masks_names_and_is_audited(people, quinn):
    client, _ = quinn

    response = post_action(client, "export_xlsx", [people["nina"]])

    sheet = load_workbook(io.BytesIO(response.content)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[1][1] == mask_name(people["nina"].name)
    assert rows[1][1] != people["nina"].name
    (event,) = AuditEvent.objects.filter(action=AuditAction.EXPORT)
    assert event.count == 1


def test_export_of_at_risk_queue(people, quinn):
    client, _ = quinn

    response = post_action(
        client, "export_xlsx", [people["rita"]], query="?queue=at_risk"
    )

    rows = list(load_workbook(io.BytesIO(response.content)).active.values)
    assert len(rows) == 2
    assert rows[1][0] == people["rita"].pk
    assert rows[1][8] == "yes"
    assert rows[1][9] == 100
    assert rows[1][10] == "¥273.98 more net spend"


def test_export_needs_export_permission(people):
    client, _ = staff_client("wes", ["view_memberoutlook", "change_member"])

    response = post_action(client, "export_xlsx", [people["nina"]])

    assert not response["Content-Type"].startswith("application/vnd")
