"""Erasing a member's personal data, the tombstones that keep them out, lifting.

Personas: Lin Wei (M0001 at the Xuhui store) came in through two member
imports and an activity import. Staff once wrote an override reason that
names her and her phone, and a message to her waits in the outbox. Zhao
Ming (M0002) is imported with her and is never erased. Eraser Eve has
members.erase_member, and viewer Vic may only view members.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from django.apps import apps
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.db import models
from django.db.models import Sum
from django.test import Client
from django.utils import timezone, translation
from rest_framework.test import APIClient

from members.api_auth import issue_token
from members.importing.service import import_data
from members.importing.streaming import import_path
from members.merging import MergeError, merge_members
from members.models import (
    Activity,
    AuditAction,
    AuditEvent,
    ChannelIdentity,
    ErasureTombstone,
    ImportIssue,
    Member,
    OutboxMessage,
)
from members.notifications import notify
from members.rights import (
    ErasureError,
    Kind,
    channel_id_value,
    erase_member,
    erased_digests,
    lift_tombstones,
    tombstone_digest,
)
from tests.conftest import make_member
from tiers.models import TierChange
from tiers.overrides import request_override

MEMBERS_HEADER = "external_id,name,phone,email,channel,joined_at"
FIRST_MEMBERS = f"""{MEMBERS_HEADER}
M0001,Lin W.,13900139000,,store-xuhui,2023-05-01
M0002,Zhao Ming,13800000002,zhao.ming@example.com,store-xuhui,2023-06-12
"""
# The file erased people come back through: Lin's current data, with her
# line repeated so that the batch stores a duplicate issue naming M0001.
ORIGINAL_MEMBERS = f"""{MEMBERS_HEADER}
M0001,Lin Wei,13800138000,Lin.Wei@example.com,store-xuhui,2023-05-01
M0002,Zhao Ming,13800000002,zhao.ming@example.com,store-xuhui,2023-06-12
M0001,Lin Wei,13800138000,Lin.Wei@example.com,store-xuhui,2023-05-01
"""
ACTIVITIES_HEADER = "external_id,occurred_at,amount,channel,kind,reference"
ORIGINAL_ACTIVITIES = f"""{ACTIVITIES_HEADER}
M0001,2024-05-02 10:00,100.00,store-xuhui,purchase,CN-4001
M0001,2024-05-03 10:00,250.00,store-xuhui,purchase,CN-4002
M0002,2024-05-03 11:00,80.00,store-xuhui,purchase,CN-4003
"""
LATER_ACTIVITIES = f"""{ACTIVITIES_HEADER}
M0001,2024-06-02 10:00,90.00,store-xuhui,purchase,CN-5001
M0002,2024-06-03 11:00,70.00,store-xuhui,purchase,CN-5002
"""
# Every value that identified Lin, including ones an import replaced.
LIN_VALUES = (
    "Lin Wei",
    "Lin W.",
    "13800138000",
    "13900139000",
    "Lin.Wei@example.com",
    "lin.wei@example.com",
    "M0001",
)
ERASED = "erased on request"


def grant_permissions(user: User, *codenames: str) -> User:
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return User.objects.get(pk=user.pk)


@pytest.fixture(autouse=True)
def _english_messages():
    """Check the English messages, whatever language an earlier test left on."""
    with translation.override("en"):
        yield


@pytest.fixture
def eve(db) -> User:
    user = User.objects.create_user("eve", password="pw", is_staff=True)
    return grant_permissions(user, "view_member", "erase_member")


@pytest.fixture
def vic(db) -> User:
    user = User.objects.create_user("vic", password="pw", is_staff=True)
    return grant_permissions(user, "view_member")


def import_text(text: str, kind: str, name: str) -> object:
    return import_data(text.encode(), kind, file_name=name)


@pytest.fixture
def lin(ladder, store, eve) -> Member:
    import_text(FIRST_MEMBERS, "members", "first.csv")
    import_text(ORIGINAL_MEMBERS, "members", "members.csv")
    import_text(ORIGINAL_ACTIVITIES, "activities", "activities.csv")
    member = ChannelIdentity.objects.get(external_id="M0001").member
    request_override(
        member,
        ladder["silver"],
        "one_off",
        "Lin Wei called from 13800138000 about her missing points",
        user=eve,
    )
    notify(member.pk, "promotion", {"tier": "Gold"}, "test-promotion:1")
    member.refresh_from_db()
    return member


def linked_text_values() -> list[tuple[type[models.Model], list[str]]]:
    """Every model with a foreign key to Member, with its text-like columns."""
    found = []
    for model in apps.get_models():
        keys = [
            f.name
            for f in model._meta.get_fields()
            if isinstance(f, models.ForeignKey) and f.related_model is Member
        ]
        if model is not Member and keys:
            found.append((model, keys))
    return found


def texts_of(row: models.Model) -> list[str]:
    texts = []
    for field_ in row._meta.concrete_fields:
        value = getattr(row, field_.attname)
        if isinstance(field_, models.JSONField):
            texts.append(json.dumps(value, ensure_ascii=False))
        elif isinstance(value, str):
            texts.append(value)
    return texts


# Erasure


def test_erasure_clears_member_fields(lin, eve):
    public_id = lin.public_id

    erase_member(lin, eve, "Ticket 77")

    lin.refresh_from_db()
    assert lin.name == ""
    assert lin.phone == ""
    assert lin.phone_e164 == ""
    assert lin.email == ""
    assert lin.erased_at is not None
    assert lin.public_id != public_id


def test_erasure_leaves_no_value_in_linked_rows(lin, eve):
    erase_member(lin, eve, "Ticket 77")

    scanned = set()
    for model, keys in linked_text_values():
        condition = models.Q()
        for key in keys:
            condition |= models.Q(**{key: lin.pk})
        for row in model._default_manager.filter(condition):
            scanned.add(model._meta.label_lower)
            for text in texts_of(row):
                for value in LIN_VALUES:
                    assert value not in text, (model._meta.label_lower, value)
    # The scan reached the rows that held her data, history included.
    assert "tiers.historicaltieroverride" in scanned
    assert "members.importedmember" in scanned
    assert "tiers.tieroverride" in scanned


def test_erasure_scrubs_import_issues(lin, eve):
    assert ImportIssue.objects.filter(value="M0001").exists()

    erase_member(lin, eve, "Ticket 77")

    for issue in ImportIssue.objects.all():
        for value in LIN_VALUES:
            assert value not in issue.value


def test_erasure_keeps_ledger_and_history(lin, eve):
    spend_before = Activity.objects.filter(member=lin).aggregate(s=Sum("amount"))["s"]
    changes_before = TierChange.objects.filter(member=lin).count()

    erase_member(lin, eve, "Ticket 77")

    spend_after = Activity.objects.filter(member=lin).aggregate(s=Sum("amount"))["s"]
    assert spend_before == Decimal("350.00")
    assert spend_after == spend_before
    assert TierChange.objects.filter(member=lin).count() == changes_before


def test_erasure_pseudonymises_channel_ids(lin, eve):
    erase_member(lin, eve, "Ticket 77")

    identity = ChannelIdentity.objects.get(member=lin)
    assert identity.external_id == f"erased:{lin.pk}:{identity.pk}"
    assert not ChannelIdentity.objects.filter(external_id="M0001").exists()


def test_erasure_writes_tombstones(lin, eve):
    erase_member(lin, eve, "Ticket 77")

    kinds = set(
        ErasureTombstone.objects.filter(member=lin).values_list("kind", flat=True)
    )
    assert kinds == {Kind.CHANNEL_ID, Kind.PHONE, Kind.EMAIL}
    channel_id = channel_id_value("Store-Xuhui", "M0001")
    assert erased_digests(Kind.CHANNEL_ID, [channel_id])
    assert erased_digests(Kind.PHONE, ["+8613800138000"])
    assert erased_digests(Kind.EMAIL, [" LIN.WEI@example.com "])
    assert not erased_digests(Kind.PHONE, ["+8613800000002"])


def test_tombstone_digest_depends_on_key(settings):
    first = tombstone_digest(Kind.EMAIL, "a@example.com")
    settings.CRM_ERASURE_KEY = "another-key-of-at-least-thirty-two-chars"

    assert tombstone_digest(Kind.EMAIL, "a@example.com") != first
    assert tombstone_digest(Kind.PHONE, "a@example.com") != tombstone_digest(
        Kind.EMAIL, "a@example.com"
    )


def test_erasure_cancels_pending_messages(lin, eve):
    assert OutboxMessage.objects.filter(member=lin, status="pending").exists()

    result = erase_member(lin, eve, "Ticket 77")

    assert result.messages_cancelled >= 1
    assert not OutboxMessage.objects.filter(member=lin, status="pending").exists()


def test_erasure_records_audit_event(lin, eve):
    erase_member(lin, eve, "Ticket 77")

    event = AuditEvent.objects.get(action=AuditAction.ERASE)
    assert event.member_id == lin.pk
    assert event.user == eve
    assert event.detail["reason"] == "Ticket 77"
    assert event.detail["tombstones"] == 3


def test_erasure_twice_is_rejected(lin, eve):
    erase_member(lin, eve, "Ticket 77")

    with pytest.raises(ErasureError, match="already erased"):
        erase_member(lin, eve, "Ticket 78")
    assert AuditEvent.objects.filter(action=AuditAction.ERASE).count() == 1


def test_erasure_needs_reason(lin, eve):
    with pytest.raises(ErasureError, match="reason"):
        erase_member(lin, eve, "  ")

    lin.refresh_from_db()
    assert lin.name == "Lin Wei"


def test_erasure_of_merged_member_is_rejected(lin, eve, store):
    kept = make_member(store, "M0100", name="Lin Wei (new card)")
    merge_members(lin, kept, user=eve, reason="Same person")
    lin.refresh_from_db()

    with pytest.raises(ErasureError, match=f"member #{kept.pk}"):
        erase_member(lin, eve, "Ticket 77")


def test_erasure_includes_members_merged_in(lin, eve, store):
    kept = make_member(store, "M0100", name="Lin Wei (new card)")
    merge_members(lin, kept, user=eve, reason="Same person")

    result = erase_member(kept, eve, "Ticket 77")

    lin.refresh_from_db()
    assert result.members == 2
    assert lin.name == ""
    assert lin.phone == ""
    assert lin.erased_at is not None
    assert not ChannelIdentity.objects.filter(external_id="M0001").exists()


def test_erased_member_cannot_be_merged(lin, eve, store):
    other = make_member(store, "M0200", name="Someone")
    erase_member(lin, eve, "Ticket 77")
    lin.refresh_from_db()

    with pytest.raises(MergeError, match="erased"):
        merge_members(lin, other, user=eve, reason="Test")


def test_erase_command_audits_as_user(lin, eve):
    call_command("erase_member", str(lin.pk), "--reason", "Ticket 77", "--user", "eve")

    lin.refresh_from_db()
    assert lin.erased_at is not None
    assert AuditEvent.objects.get(action=AuditAction.ERASE).username == "eve"


def test_erase_command_needs_permission(lin, vic):
    with pytest.raises(CommandError, match="members.erase_member"):
        call_command(
            "erase_member", str(lin.pk), "--reason", "Ticket 77", "--user", "vic"
        )


# The way back in: imports and events


def test_in_memory_reimport_rejects_erased_rows(lin, eve):
    erase_member(lin, eve, "Ticket 77")
    members_before = Member.objects.count()

    report = import_text(ORIGINAL_MEMBERS, "members", "members.csv")

    assert Member.objects.count() == members_before
    assert report.created == 0
    assert report.rejected == 2
    reasons = {issue.reason for issue in report.rejections}
    assert len(reasons) == 1
    assert ERASED in reasons.pop()
    stored = ImportIssue.objects.filter(
        batch_id=report.batch_id, reason__contains=ERASED
    )
    assert stored.count() == 2
    assert set(stored.values_list("value", flat=True)) == {""}


def test_reimport_rejects_new_id_with_erased_phone(lin, eve):
    erase_member(lin, eve, "Ticket 77")
    text = f"{MEMBERS_HEADER}\nM0777,L. Wei,+86 138 0013 8000,,tmall,2024-01-01\n"

    report = import_text(text, "members", "new-card.csv")

    assert report.created == 0
    assert report.rejected == 1
    assert report.rejections[0].column == "phone"
    assert not ChannelIdentity.objects.filter(external_id="M0777").exists()


def test_activity_reimport_rejects_erased_rows(lin, eve):
    erase_member(lin, eve, "Ticket 77")
    activities_before = Activity.objects.count()

    report = import_text(LATER_ACTIVITIES, "activities", "later.csv")

    assert Activity.objects.count() == activities_before + 1
    assert report.created == 1
    assert report.rejected == 1
    assert ERASED in report.rejections[0].reason


def test_streamed_reimport_rejects_erased_rows(lin, eve, tmp_path: Path):
    erase_member(lin, eve, "Ticket 77")
    path = tmp_path / "members.csv"
    path.write_text(ORIGINAL_MEMBERS, encoding="utf-8")
    members_before = Member.objects.count()

    result = import_path(path, "members", chunk_rows=1, keep_issues=True)

    assert Member.objects.count() == members_before
    assert result.created == 0
    assert result.rejected == 2
    assert (
        ImportIssue.objects.filter(
            batch_id=result.batch_id, reason__contains=ERASED
        ).count()
        == 2
    )


def test_streamed_activity_reimport_rejects_erased_rows(lin, eve, tmp_path: Path):
    erase_member(lin, eve, "Ticket 77")
    path = tmp_path / "later.csv"
    path.write_text(LATER_ACTIVITIES, encoding="utf-8")

    result = import_path(path, "activities", chunk_rows=1)

    assert result.created == 1
    assert result.rejected == 1
    issue = ImportIssue.objects.get(batch_id=result.batch_id)
    assert ERASED in issue.reason


def test_event_with_erased_id_is_rejected(lin, eve, store):
    erase_member(lin, eve, "Ticket 77")
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_token(store, 'Tills')[1]}")
    activities_before = Activity.objects.count()

    response = client.post(
        "/api/v1/events/",
        {
            "external_id": "M0001",
            "reference": "R-ERASED-1",
            "occurred_at": timezone.now().isoformat(),
            "amount": "10.00",
            "kind": "purchase",
        },
        format="json",
    )

    assert response.status_code == 422
    assert ERASED in json.dumps(response.json())
    assert Activity.objects.count() == activities_before


def test_event_with_erased_phone_is_rejected(lin, eve, store):
    erase_member(lin, eve, "Ticket 77")
    store.match_phone = True
    store.save()
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_token(store, 'Tills')[1]}")
    identities_before = ChannelIdentity.objects.count()

    response = client.post(
        "/api/v1/events/",
        {
            "external_id": "NEW-CARD-1",
            "reference": "R-ERASED-2",
            "occurred_at": timezone.now().isoformat(),
            "amount": "10.00",
            "kind": "purchase",
            "phone": "138 0013 8000",
        },
        format="json",
    )

    assert response.status_code == 422
    assert ERASED in json.dumps(response.json())
    assert ChannelIdentity.objects.count() == identities_before


def test_lifting_tombstones_lets_person_back(lin, eve):
    erase_member(lin, eve, "Ticket 77")

    lifted = lift_tombstones(lin, eve, "Rejoined in store, ticket 91")
    report = import_text(ORIGINAL_MEMBERS, "members", "members.csv")

    assert lifted == 3
    assert report.created == 1
    assert ChannelIdentity.objects.get(external_id="M0001").member_id != lin.pk
    event = AuditEvent.objects.get(action=AuditAction.LIFT_TOMBSTONE)
    assert event.member_id == lin.pk
    assert event.detail["tombstones"] == 3


# Admin


def test_admin_erase_page_forbidden_for_viewer(client, lin, vic):
    client.force_login(vic)

    page = client.get(f"/admin/members/member/{lin.pk}/erase/")
    post = client.post(f"/admin/members/member/{lin.pk}/erase/", {"reason": "x"})

    assert page.status_code == 403
    assert post.status_code == 403
    lin.refresh_from_db()
    assert lin.erased_at is None


def test_admin_erase_needs_reason(client, lin, eve):
    client.force_login(eve)

    response = client.post(f"/admin/members/member/{lin.pk}/erase/", {"reason": ""})

    assert response.status_code == 200
    lin.refresh_from_db()
    assert lin.erased_at is None


def test_admin_erase_then_banner(client, lin, eve):
    client.force_login(eve)
    change_url = f"/admin/members/member/{lin.pk}/change/"
    assert "/erase/" in client.get(change_url).content.decode()

    response = client.post(
        f"/admin/members/member/{lin.pk}/erase/", {"reason": "Ticket 77"}
    )
    page = client.get(change_url).content.decode()

    assert response.status_code == 302
    assert response["Location"] == change_url
    assert "erased-banner" in page
    assert "/erase/" not in page


def test_erased_member_fields_read_only(client, lin):
    root = User.objects.create_superuser("root", password="pw")
    client.force_login(root)
    erase_member(lin, root, reason="Ticket 78")
    change_url = f"/admin/members/member/{lin.pk}/change/"

    page = client.get(change_url).content.decode()
    client.post(
        change_url,
        {"name": "Lin Again", "phone": "13800000000", "email": "lin@example.com"},
    )
    lin.refresh_from_db()

    assert 'name="phone"' not in page
    assert 'name="email"' not in page
    assert lin.name == ""
    assert lin.phone == ""
    assert lin.email == ""


def test_admin_erase_rejects_post_without_csrf(lin, eve):
    client = Client(enforce_csrf_checks=True)
    client.force_login(eve)

    response = client.post(
        f"/admin/members/member/{lin.pk}/erase/", {"reason": "Ticket 77"}
    )

    assert response.status_code == 403
    lin.refresh_from_db()
    assert lin.erased_at is None


def test_erasure_keeps_numbers_containing_short_id(ladder, store, eve):
    """A short channel id and a name inside amounts and codes stay as they are."""
    member = make_member(store, "7", name="Li")
    member.phone = "13812345678"
    member.save()
    change = TierChange.objects.create(
        member=member,
        to_tier=ladder["silver"],
        reason=TierChange.Reason.PROMOTION,
        changed_at=timezone.now(),
        as_of=timezone.now(),
        explanation={"value": "2477.17", "code": "W2M6-JWVC-H9H7", "who": "Lisa"},
    )
    notify(
        member.pk,
        "promotion",
        {"tier": "Silver", "code": "W2M6-JWVC-H9H7", "note": "Li at 13812345678"},
        "short-id:1",
    )

    erase_member(member, eve, reason="Ticket 79")
    change.refresh_from_db()
    message = OutboxMessage.objects.filter(member=member).first()

    assert change.explanation["value"] == "2477.17"
    assert change.explanation["code"] == "W2M6-JWVC-H9H7"
    assert change.explanation["who"] == "Lisa"
    assert message is not None
    assert message.params["code"] == "W2M6-JWVC-H9H7"
    assert message.params["note"] == "[erased] at [erased]"


def test_erasure_reason_in_audit_is_scrubbed(lin, eve):
    phone = lin.phone_e164
    erase_member(lin, eve, reason=f"Request from {phone} by lin@example.com")

    event = AuditEvent.objects.get(action=AuditAction.ERASE, member=lin)
    assert phone not in event.detail["reason"]
    assert "lin@example.com" not in event.detail["reason"]
    assert event.detail["reason"].startswith("Request from ")
