"""The notification outbox: creating messages, their language, the member page
and the admin.

Personas: Alice reads English and Bob reads Simplified Chinese. Both hold an
identity at the Xuhui store.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import checks
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.models import OrmQ, Schedule
from django_q.signing import SignedPackage

from members.delivery import check_notification_settings
from members.links import member_page_url
from members.models import Member, OutboxMessage
from members.notifications import (
    RECENT_MESSAGE_COUNT,
    notify,
    queue_tier_change_messages,
    render,
    render_message,
    send_again,
)
from tests.conftest import make_member, record
from tiers.evaluation import evaluate
from tiers.models import ReviewWarning, TierChange

pytestmark = pytest.mark.django_db

Status = OutboxMessage.Status
SILVER_PROMOTION = {"tier": "Silver", "from_tier": "Bronze"}
SHORTFALL = {
    "operator": "all",
    "needed": 1,
    "items": [
        {
            "requirement": 1,
            "metric": "net_spend",
            "window": "rolling_days",
            "days": 365,
            "value": "4200",
            "threshold": "5000",
        }
    ],
}


@pytest.fixture(autouse=True)
def in_app_and_email(settings):
    settings.CRM_NOTIFICATION_BACKENDS = ["in_app", "email"]


@pytest.fixture
def alice(store) -> Member:
    member = make_member(store, "A-1", name="Alice Wang")
    member.language = "en"
    member.email = "alice@example.com"
    member.save()
    return member


@pytest.fixture
def bob(store) -> Member:
    member = make_member(store, "B-1", name="Bob Li")
    member.language = "zh-hans"
    member.save()
    return member


def promote_to_silver(member, store) -> TierChange:
    """Evaluate ``member`` into Bronze, add ¥1,000 of spend and promote it."""
    now = timezone.now()
    record(member, store, "purchase", now - dt.timedelta(days=2), "999")
    evaluate([member.pk], as_of=now - dt.timedelta(days=1))
    record(member, store, "purchase", now - dt.timedelta(hours=1), "1")
    evaluate([member.pk], as_of=now)
    return TierChange.objects.get(member=member, reason=TierChange.Reason.PROMOTION)


# Creating messages


def test_notify_creates_row_per_backend(alice):
    notify(alice.pk, "promotion", SILVER_PROMOTION, "tier-change:1")

    rows = {m.channel: m for m in OutboxMessage.objects.all()}
    assert set(rows) == {"in_app", "email"}
    assert rows["in_app"].status == Status.SENT
    assert rows["in_app"].sent_at is not None
    assert rows["email"].status == Status.PENDING
    assert rows["email"].attempts == 0
    assert rows["email"].params == SILVER_PROMOTION
    assert rows["email"].topic == "promotion"


def test_notify_twice_adds_nothing(alice):
    notify(alice.pk, "promotion", SILVER_PROMOTION, "tier-change:1")
    notify(alice.pk, "promotion", {"tier": "Gold"}, "tier-change:1")

    assert OutboxMessage.objects.count() == 2
    assert {m.params["tier"] for m in OutboxMessage.objects.all()} == {"Silver"}


def test_notify_rolled_back_with_caller(alice):
    with pytest.raises(RuntimeError), transaction.atomic():
        notify(alice.pk, "promotion", SILVER_PROMOTION, "tier-change:1")
        raise RuntimeError("caller failed after notify")

    assert not OutboxMessage.objects.exists()


def test_notify_queues_sender_once_per_commit(
    alice, bob, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        notify(alice.pk, "promotion", SILVER_PROMOTION, "tier-change:1")
        notify(bob.pk, "promotion", SILVER_PROMOTION, "tier-change:2")
        notify(alice.pk, "benefit_issued", {"benefit": "Coupon"}, "grant-issued:3")

    assert len(callbacks) == 1
    assert OrmQ.objects.count() == 1


@pytest.mark.parametrize(
    ("topic", "params", "key", "error"),
    [
        ("birthday", {"tier": "Gold"}, "k:1", "Unknown notification topic 'birthday'"),
        ("promotion", {}, "k:1", "is missing the parameters tier"),
        ("benefit_expiring", {"benefit": "Coupon"}, "k:1", "expires_at"),
        ("promotion", {"tier": "Gold"}, "", "key '' is invalid"),
        ("promotion", {"tier": "Gold"}, "k" * 201, "is invalid"),
    ],
)
def test_notify_rejects_invalid_event(alice, topic, params, key, error):
    with pytest.raises(ValueError, match=error):
        notify(alice.pk, topic, params, key)

    assert not OutboxMessage.objects.exists()


def test_notify_unknown_member(db):
    with pytest.raises(Member.DoesNotExist):
        notify(999_999, "promotion", {"tier": "Gold"}, "tier-change:1")


def test_notify_stores_dates_as_text(alice):
    params = {"benefit": "Coupon", "expires_at": dt.date(2025, 1, 31)}

    notify(alice.pk, "benefit_issued", params, "grant-issued:1")

    message = OutboxMessage.objects.get(channel="email")
    assert message.params["expires_at"] == "2025-01-31"


# Language


def test_language_defaults_to_setting(store, settings):
    settings.LANGUAGE_CODE = "en"

    member = Member.objects.create(name="New")

    assert member.language == "en"


def test_language_chosen_per_member(alice, bob):
    params = {
        "benefit": "Coupon",
        "code": "C-77",
        "expires_at": "2025-01-31T12:00:00+08:00",
    }
    notify(alice.pk, "benefit_issued", params, "grant-issued:1")
    notify(bob.pk, "benefit_issued", params, "grant-issued:2")

    to_alice = OutboxMessage.objects.get(member=alice, channel="email")
    to_bob = OutboxMessage.objects.get(member=bob, channel="email")

    assert to_alice.language == "en"
    assert to_bob.language == "zh-hans"
    english = render_message(to_alice)
    assert english.subject == "New benefit: Coupon"
    assert english.body == (
        "You have received Coupon. Your code is C-77. It is valid until 31 Jan 2025."
    )
    assert "2025年1月31日" in render_message(to_bob).body


def test_chinese_sentences_joined_without_spaces(bob):
    params = {
        "benefit": "生日券",
        "code": "C-77",
        "expires_at": "2025-01-31T12:00:00+08:00",
    }
    notify(bob.pk, "benefit_issued", params, "grant-issued:3")

    body = render_message(OutboxMessage.objects.get(member=bob, channel="email")).body

    assert body == "您已获得生日券。您的券码为C-77。有效期至2025年1月31日。"


def test_grant_shaped_params_accepted(alice):
    params = {
        "grant_id": 7,
        "benefit": "Coupon",
        "kind": "coupon",
        "code": "",
        "expires_at": None,
    }

    notify(alice.pk, "benefit_issued", params, "grant-issued:7")

    message = OutboxMessage.objects.get(channel="email")
    assert render_message(message).body == "You have received Coupon."


def test_promotion_and_demotion_text():
    promotion = render("promotion", SILVER_PROMOTION, "en")
    demotion = render("demotion", {"tier": "Bronze", "from_tier": "Silver"}, "en")

    assert promotion.subject == "You are now Silver"
    assert promotion.body == (
        "Congratulations! Your tier has gone up from Bronze to Silver."
    )
    assert demotion.subject == "Your tier is now Bronze"
    assert demotion.body == "Your tier has changed from Silver to Bronze."


def test_benefit_expiring_text():
    params = {"benefit": "Coupon", "expires_at": "2025-01-31T12:00:00+08:00"}

    rendered = render("benefit_expiring", params, "en")

    assert rendered.subject == "Coupon expires soon"
    assert rendered.body == "Your benefit Coupon expires on 31 Jan 2025."


def test_review_warning_text_in_both_languages():
    params = {
        "tier": "Gold",
        "review_at": "2025-06-30T12:00:00+08:00",
        "shortfall": SHORTFALL,
    }

    english = render("review_warning", params, "en")
    chinese = render("review_warning", params, "zh-hans")

    assert english.subject == "Your Gold tier is at risk"
    assert english.body == "Review on 30 June: ¥800 more net spend keeps Gold"
    assert chinese.body == "6月30日复核：还差净消费¥800，补足即可保级Gold"


def test_withdrawn_language_falls_back(settings):
    settings.LANGUAGE_CODE = "en"

    rendered = render("promotion", SILVER_PROMOTION, "fr")

    assert rendered.subject == "You are now Silver"


# Messages for tier changes and review warnings


def test_promotion_gets_messages(ladder, store, alice):
    change = promote_to_silver(alice, store)

    created = queue_tier_change_messages()

    assert created == 2
    message = OutboxMessage.objects.get(channel="email")
    assert message.key == f"tier-change:{change.pk}"
    assert message.topic == "promotion"
    assert message.params == SILVER_PROMOTION
    assert message.language == "en"
    assert render_message(message).subject == "You are now Silver"


def test_tier_change_messages_twice_add_nothing(ladder, store, alice):
    promote_to_silver(alice, store)
    queue_tier_change_messages()
    before = list(OutboxMessage.objects.values_list("pk", "key", "channel"))

    created = queue_tier_change_messages()

    assert created == 0
    assert list(OutboxMessage.objects.values_list("pk", "key", "channel")) == before


def test_new_backend_gets_missing_rows(ladder, store, alice, settings):
    promote_to_silver(alice, store)
    settings.CRM_NOTIFICATION_BACKENDS = ["in_app"]
    queue_tier_change_messages()
    settings.CRM_NOTIFICATION_BACKENDS = ["in_app", "email"]

    created = queue_tier_change_messages()

    assert created == 2
    channels = sorted(OutboxMessage.objects.values_list("channel", flat=True))
    assert channels == ["email", "in_app"]


def test_first_evaluation_gets_no_message(ladder, store, alice):
    record(alice, store, "purchase", timezone.now() - dt.timedelta(days=1), "1500")
    evaluate([alice.pk])

    assert TierChange.objects.filter(reason=TierChange.Reason.INITIAL).exists()
    assert queue_tier_change_messages() == 0


def test_old_tier_change_gets_no_message(ladder, store, alice, settings):
    settings.CRM_NOTIFICATION_MAX_AGE_DAYS = 7
    change = promote_to_silver(alice, store)
    TierChange.objects.filter(pk=change.pk).update(
        changed_at=timezone.now() - dt.timedelta(days=8)
    )

    assert queue_tier_change_messages() == 0


@pytest.mark.parametrize(
    ("from_tier", "to_tier", "topic"),
    [
        ("bronze", "gold", "promotion"),
        ("gold", "silver", "demotion"),
        (None, "silver", "promotion"),
        ("gold", "gold", None),
    ],
)
def test_override_direction_decides_topic(ladder, alice, from_tier, to_tier, topic):
    now = timezone.now()
    TierChange.objects.create(
        member=alice,
        from_tier=ladder[from_tier] if from_tier else None,
        to_tier=ladder[to_tier],
        changed_at=now,
        as_of=now,
        reason=TierChange.Reason.OVERRIDE,
        explanation={},
    )

    queue_tier_change_messages()

    topics = set(OutboxMessage.objects.values_list("topic", flat=True))
    assert topics == ({topic} if topic else set())


def test_review_warning_gets_message(tiers, alice):
    review_at = timezone.now() + dt.timedelta(days=20)
    warning = ReviewWarning.objects.create(
        member=alice,
        tier=tiers["gold"],
        review_at=review_at,
        as_of=timezone.now(),
        shortfall=SHORTFALL,
    )

    queue_tier_change_messages()
    again = queue_tier_change_messages()

    message = OutboxMessage.objects.get(channel="email")
    assert again == 0
    assert message.key == f"review-warning:{warning.pk}"
    assert message.topic == "review_warning"
    assert render_message(message).body.endswith("¥800 more net spend keeps Gold")


def test_past_review_gets_no_warning_message(tiers, alice):
    ReviewWarning.objects.create(
        member=alice,
        tier=tiers["gold"],
        review_at=timezone.now() - dt.timedelta(hours=1),
        as_of=timezone.now() - dt.timedelta(days=5),
        shortfall=SHORTFALL,
    )

    assert queue_tier_change_messages() == 0


# The member page


def test_member_page_lists_messages(client, ladder, store, alice, bob):
    promote_to_silver(alice, store)
    queue_tier_change_messages()
    notify(bob.pk, "promotion", {"tier": "Platinum"}, "tier-change:bob")

    html = client.get(member_page_url(alice), HTTP_ACCEPT_LANGUAGE="en").content
    page = html.decode()

    assert "You are now Silver" in page
    assert "Your tier has gone up from Bronze to Silver." in page
    assert "Platinum" not in page


def test_promotion_reaches_page_through_queue(
    client, ladder, store, alice, django_capture_on_commit_callbacks
):
    # Run the tasks that the evaluations' commits queued, as a worker would.
    with django_capture_on_commit_callbacks(execute=True):
        promote_to_silver(alice, store)
    queued = [SignedPackage.loads(entry.payload) for entry in OrmQ.objects.all()]
    tasks = [
        task
        for task in queued
        if task["func"] == "members.notifications.queue_tier_change_messages"
    ]
    for task in tasks:
        import_string(task["func"])(*task["args"], **task["kwargs"])

    page = client.get(member_page_url(alice), HTTP_ACCEPT_LANGUAGE="en")

    assert tasks
    assert "You are now Silver" in page.content.decode()


def test_member_page_in_page_language(client, ladder, bob):
    params = {"benefit": "Coupon", "expires_at": "2025-01-31T12:00:00+08:00"}
    notify(bob.pk, "benefit_expiring", params, "grant-expiring:1")

    english = client.get(member_page_url(bob), HTTP_ACCEPT_LANGUAGE="en")
    chinese = client.get(member_page_url(bob), HTTP_ACCEPT_LANGUAGE="zh-CN")

    assert "expires on 31 Jan 2025" in english.content.decode()
    assert "2025年1月31日" in chinese.content.decode()


def test_member_page_newest_first_and_capped(client, ladder, alice):
    for number in range(RECENT_MESSAGE_COUNT + 2):
        notify(alice.pk, "benefit_issued", {"benefit": f"B{number:02}"}, f"g:{number}")

    page = client.get(member_page_url(alice), HTTP_ACCEPT_LANGUAGE="en")
    html = page.content.decode()

    newest = f"New benefit: B{RECENT_MESSAGE_COUNT + 1:02}"
    assert newest in html
    assert "New benefit: B01" not in html
    assert "New benefit: B00" not in html
    assert html.index(newest) < html.index("New benefit: B02")


def test_member_page_without_messages(client, ladder, alice):
    page = client.get(member_page_url(alice), HTTP_ACCEPT_LANGUAGE="en")

    assert "No messages yet." in page.content.decode()


def test_member_page_skips_other_channels(client, ladder, alice, settings):
    settings.CRM_NOTIFICATION_BACKENDS = ["email"]
    notify(alice.pk, "promotion", {"tier": "Gold"}, "tier-change:1")

    page = client.get(member_page_url(alice), HTTP_ACCEPT_LANGUAGE="en")

    assert "You are now Gold" not in page.content.decode()


# Staff


def test_admin_filters_failed_messages(admin_client, alice, bob):
    notify(alice.pk, "promotion", {"tier": "Gold"}, "tier-change:1")
    notify(bob.pk, "promotion", {"tier": "Gold"}, "tier-change:2")
    OutboxMessage.objects.filter(member=bob, channel="email").update(
        status=Status.FAILED, last_error="The webhook responded with HTTP 500."
    )
    url = reverse("admin:members_outboxmessage_changelist")

    page = admin_client.get(url, {"status__exact": "failed", "channel": "email"})

    assert page.status_code == 200
    assert list(page.context["cl"].result_list) == [
        OutboxMessage.objects.get(status=Status.FAILED)
    ]
    assert "The webhook responded with HTTP 500." in page.content.decode()


def test_admin_changelist_queries_flat(admin_client, alice, django_assert_num_queries):
    for number in range(30):
        notify(alice.pk, "benefit_issued", {"benefit": "Coupon"}, f"g:{number}")
    url = reverse("admin:members_outboxmessage_changelist")

    # The session, the user, the count for the paginator and the page of
    # messages joined with their members.
    with django_assert_num_queries(4):
        admin_client.get(url)


def test_admin_send_again_action(admin_client, alice):
    notify(alice.pk, "promotion", {"tier": "Gold"}, "tier-change:1")
    failed = OutboxMessage.objects.get(channel="email")
    OutboxMessage.objects.filter(pk=failed.pk).update(status=Status.FAILED, attempts=8)
    in_app = OutboxMessage.objects.get(channel="in_app")
    url = reverse("admin:members_outboxmessage_changelist")

    admin_client.post(
        url,
        {"action": "send_again_action", "_selected_action": [failed.pk, in_app.pk]},
    )

    failed.refresh_from_db()
    in_app.refresh_from_db()
    assert failed.status == Status.PENDING
    assert failed.attempts == 0
    assert in_app.status == Status.SENT


def test_send_again_leaves_sent_alone(alice):
    notify(alice.pk, "promotion", {"tier": "Gold"}, "tier-change:1")
    OutboxMessage.objects.filter(channel="email").update(status=Status.SENT)

    assert send_again(OutboxMessage.objects.all()) == 0


def test_admin_offers_no_delete(admin_client, alice):
    notify(alice.pk, "promotion", {"tier": "Gold"}, "tier-change:1")
    message = OutboxMessage.objects.first()
    assert message is not None

    page = admin_client.get(
        reverse("admin:members_outboxmessage_delete", args=[message.pk])
    )

    assert page.status_code == 403


# Configuration


def test_schedules_created_by_migration():
    sender = Schedule.objects.get(name="send-notifications")
    tier_changes = Schedule.objects.get(name="tier-change-messages")

    assert sender.func == "members.jobs.send_due_messages"
    assert sender.minutes == 1
    assert tier_changes.func == "members.notifications.queue_tier_change_messages"


def test_check_reports_webhook_without_secret(settings):
    settings.CRM_NOTIFICATION_BACKENDS = ["webhook"]
    settings.CRM_WEBHOOK_URL = ""
    settings.CRM_WEBHOOK_SECRET = ""

    ids = {error.id for error in check_notification_settings(None)}

    assert ids == {"members.E002", "members.E003"}


def test_check_reports_unknown_backend(settings):
    settings.CRM_NOTIFICATION_BACKENDS = ["in_app", "carrier_pigeon"]

    errors = check_notification_settings(None)

    assert [error.id for error in errors] == ["members.E001"]
    assert all(error.level == checks.ERROR for error in errors)
