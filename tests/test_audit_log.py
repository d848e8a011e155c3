"""The audit log: which services write it, and what the admin shows of it.

Personas: Tom (store id C-1) and Sam (Tmall id T-1) are the same person,
merged by manager Mia. Approver Abe approves Mia's overrides. Auditor Ada
reads the audit log and may view members. Eraser Eve erases members and
lifts tombstones. Superuser Root can do anything the admin allows.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import translation
from playwright.sync_api import expect

from members.audit import record_event
from members.importing.batches import rollback_batch
from members.importing.service import import_data
from members.importing.streaming import import_path
from members.merging import merge_members, revert_merge
from members.models import (
    AuditAction,
    AuditEvent,
    Channel,
    ErasureTombstone,
    ImportBatch,
    Member,
)
from members.rights import erase_member
from tests.conftest import make_member
from tiers.overrides import approve, request_override

PASSWORD = "pw-for-the-audit-test"
MEMBERS_CSV = """external_id,name,phone,email,channel,joined_at
M0001,Lin Wei,13800138000,lin.wei@example.com,store-xuhui,2023-05-01
M0002,Zhao Ming,13800000002,zhao.ming@example.com,store-xuhui,2023-06-12
"""
AUDIT_LIST = "/admin/members/auditevent/"
TOMBSTONE_LIST = "/admin/members/erasuretombstone/"


def staff_user(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True)
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return User.objects.get(pk=user.pk)


@pytest.fixture
def mia(db) -> User:
    return staff_user("mia", "view_member", "change_member", "delete_member")


@pytest.fixture
def abe(db) -> User:
    return staff_user("abe", "view_member", "approve_tieroverride")


@pytest.fixture
def ada(db) -> User:
    return staff_user("ada", "view_member", "view_auditevent", "view_erasuretombstone")


@pytest.fixture
def eve(db) -> User:
    return staff_user(
        "eve", "view_member", "erase_member", "view_erasuretombstone", "view_auditevent"
    )


@pytest.fixture
def root(db) -> User:
    return User.objects.create_superuser("root", password=PASSWORD)


@pytest.fixture
def tom_and_sam(ladder, store) -> tuple[Member, Member]:
    tmall = Channel.objects.create(code="tmall", name="Tmall", kind="ecommerce")
    return make_member(store, "C-1", name="Tom Chen"), make_member(
        tmall, "T-1", name="Sam Chen"
    )


def actions_of(member: Member) -> list[str]:
    return list(
        AuditEvent.objects.filter(member=member)
        .order_by("pk")
        .values_list("action", flat=True)
    )


# Services write the log


def test_merge_and_revert_are_audited(tom_and_sam, mia):
    tom, sam = tom_and_sam

    merge = merge_members(sam, tom, user=mia, reason="Same phone")
    revert_merge(merge, user=mia)

    assert actions_of(tom) == [AuditAction.MERGE, AuditAction.REVERT_MERGE]
    assert actions_of(sam) == [AuditAction.MERGE, AuditAction.REVERT_MERGE]
    event = AuditEvent.objects.filter(member=tom).first()
    assert event is not None
    assert event.username == "mia"
    assert event.detail["merge"] == merge.pk


def test_override_request_and_approval_are_audited(tom_and_sam, ladder, mia, abe):
    tom, _sam = tom_and_sam
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()

    override = request_override(tom, ladder["gold"], "floor", "VIP guest", mia)
    approve(override, abe)

    events = AuditEvent.objects.filter(member=tom, action=AuditAction.OVERRIDE)
    steps = [(e.username, e.detail["step"]) for e in events.order_by("pk")]
    assert steps == [("mia", "requested"), ("abe", "approved")]
    assert events.order_by("pk").last().detail["status"] == "active"


def test_in_memory_import_is_audited_once(ladder, store, mia):
    report = import_data(
        MEMBERS_CSV.encode(), "members", file_name="members.csv", user=mia
    )

    event = AuditEvent.objects.get(action=AuditAction.IMPORT)
    assert event.username == "mia"
    assert event.member_id is None
    assert event.count == 2
    assert event.detail["batch"] == report.batch_id
    assert event.detail["created_count"] == 2


def test_streamed_import_is_audited_once(ladder, store, mia, tmp_path: Path):
    path = tmp_path / "members.csv"
    path.write_text(MEMBERS_CSV, encoding="utf-8")

    import_path(path, "members", chunk_rows=1, user=mia)

    event = AuditEvent.objects.get(action=AuditAction.IMPORT)
    assert event.count == 2
    assert event.detail["total_rows"] == 2


def test_dry_run_import_is_not_audited(ladder, store, mia):
    import_data(MEMBERS_CSV.encode(), "members", file_name="m.csv", dry_run=True)

    assert not AuditEvent.objects.exists()


def test_rollback_is_audited(ladder, store, mia):
    report = import_data(MEMBERS_CSV.encode(), "members", file_name="m.csv", user=mia)
    batch = report.batch_id

    rollback_batch(ImportBatch.objects.get(pk=batch), mia)

    event = AuditEvent.objects.get(action=AuditAction.ROLLBACK)
    assert event.username == "mia"
    assert event.detail["batch"] == batch


# The audit list in the admin


def test_audit_list_shows_each_kind_of_action(client, tom_and_sam, ladder, mia, ada):
    tom, sam = tom_and_sam
    merge_members(sam, tom, user=mia, reason="Same phone")
    request_override(tom, ladder["silver"], "one_off", "Goodwill", mia)
    record_event(mia, AuditAction.VIEW_PERSONAL, tom)
    record_event(mia, AuditAction.EXPORT_MEMBER, tom, detail={"format": "json"})
    erase_member(tom, mia, "Ticket 5")
    client.force_login(ada)

    page = client.get(AUDIT_LIST, HTTP_ACCEPT_LANGUAGE="en").content.decode()

    for action in (
        AuditAction.MERGE,
        AuditAction.OVERRIDE,
        AuditAction.VIEW_PERSONAL,
        AuditAction.EXPORT_MEMBER,
        AuditAction.ERASE,
    ):
        assert escape(str(action.label)) in page, action


def test_audit_list_filters_by_member(client, tom_and_sam, mia, ada):
    tom, sam = tom_and_sam
    record_event(mia, AuditAction.VIEW_PERSONAL, tom)
    record_event(mia, AuditAction.EXPORT_MEMBER, sam)
    client.force_login(ada)

    response = client.get(f"{AUDIT_LIST}?member={tom.pk}")
    searched = client.get(f"{AUDIT_LIST}?q={sam.pk}")

    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == list(
        AuditEvent.objects.filter(member=tom)
    )
    assert [e.member_id for e in searched.context["cl"].result_list] == [sam.pk]


def test_audit_list_search_by_user_name(client, tom_and_sam, mia, ada):
    tom, _sam = tom_and_sam
    record_event(mia, AuditAction.VIEW_PERSONAL, tom)
    record_event(ada, AuditAction.VIEW_PERSONAL, tom)
    client.force_login(ada)

    response = client.get(f"{AUDIT_LIST}?q=mia")

    assert [e.username for e in response.context["cl"].result_list] == ["mia"]


def test_audit_list_hides_member_names(client, tom_and_sam, mia, ada):
    tom, _sam = tom_and_sam
    record_event(mia, AuditAction.VIEW_PERSONAL, tom)
    client.force_login(ada)

    page = client.get(AUDIT_LIST).content.decode()

    assert f"#{tom.pk}" in page
    assert "Tom Chen" not in page


def test_audit_list_query_count_is_fixed(client, tom_and_sam, mia, ada):
    tom, sam = tom_and_sam
    client.force_login(ada)
    record_event(mia, AuditAction.VIEW_PERSONAL, tom)
    with CaptureQueriesContext(connection) as few:
        client.get(AUDIT_LIST)
    for _ in range(30):
        record_event(mia, AuditAction.VIEW_PERSONAL, sam)
    with CaptureQueriesContext(connection) as many:
        client.get(AUDIT_LIST)

    assert len(many) == len(few)


def test_audit_log_is_read_only_for_superuser(client, tom_and_sam, mia, root):
    tom, _sam = tom_and_sam
    event = record_event(mia, AuditAction.VIEW_PERSONAL, tom)
    client.force_login(root)

    add = client.get(f"{AUDIT_LIST}add/")
    delete = client.post(f"{AUDIT_LIST}{event.pk}/delete/", {"post": "yes"})
    change = client.post(f"{AUDIT_LIST}{event.pk}/change/", {"username": "x"})
    detail = client.get(f"{AUDIT_LIST}{event.pk}/change/")

    assert add.status_code == 403
    assert delete.status_code == 403
    assert change.status_code == 403
    assert detail.status_code == 200
    # The admin is served in the site's default language, Simplified Chinese.
    with translation.override(settings.LANGUAGE_CODE):
        label = str(AuditAction.VIEW_PERSONAL.label)
    assert label in detail.content.decode()
    event.refresh_from_db()
    assert event.username == "mia"


def test_member_page_links_to_its_audit_list(client, tom_and_sam, ada):
    tom, _sam = tom_and_sam
    client.force_login(ada)

    page = client.get(f"/admin/members/member/{tom.pk}/change/").content.decode()

    assert f"{AUDIT_LIST}?member={tom.pk}" in page


# Tombstones in the admin


@pytest.fixture
def erased_tom(tom_and_sam, eve) -> Member:
    tom, _sam = tom_and_sam
    erase_member(tom, eve, "Ticket 5")
    return tom


def test_tombstones_are_read_only(client, erased_tom, root):
    tombstone = ErasureTombstone.objects.filter(member=erased_tom).first()
    assert tombstone is not None
    client.force_login(root)

    add = client.get(f"{TOMBSTONE_LIST}add/")
    delete = client.post(f"{TOMBSTONE_LIST}{tombstone.pk}/delete/", {"post": "yes"})

    assert add.status_code == 403
    assert delete.status_code == 403


def test_tombstone_list_query_count_is_fixed(client, tom_and_sam, store, eve, ada):
    tom, sam = tom_and_sam
    erase_member(tom, eve, "Ticket 5")
    client.force_login(ada)
    with CaptureQueriesContext(connection) as few:
        client.get(TOMBSTONE_LIST)
    erase_member(sam, eve, "Ticket 6")
    for number in range(5):
        other = make_member(store, f"C-{100 + number}", name="Other")
        erase_member(other, eve, f"Ticket {100 + number}")
    with CaptureQueriesContext(connection) as many:
        client.get(TOMBSTONE_LIST)

    assert ErasureTombstone.objects.count() == 7
    assert len(many) == len(few)


def test_tombstone_lookup_hashes_posted_value(client, erased_tom, ada):
    client.force_login(ada)

    found = client.post(
        TOMBSTONE_LIST, {"tombstone_lookup": "store-xuhui:C-1"}, follow=True
    )
    missing = client.post(
        TOMBSTONE_LIST, {"tombstone_lookup": "store-xuhui:C-2"}, follow=True
    )

    assert [t.kind for t in found.context["cl"].result_list] == ["channel_id"]
    assert "C-1" not in found.redirect_chain[-1][0]
    assert missing.redirect_chain[-1][0] == TOMBSTONE_LIST
    assert len(list(missing.context["messages"])) == 1
    lookups = AuditEvent.objects.filter(action=AuditAction.LOOKUP, username="ada")
    assert sorted(event.count for event in lookups) == [0, 1]


def test_tombstone_get_search_takes_member_id(client, erased_tom, ada):
    client.force_login(ada)

    by_id = client.get(TOMBSTONE_LIST, {"q": str(erased_tom.pk)})
    by_channel_id = client.get(TOMBSTONE_LIST, {"q": "store-xuhui:C-1"})

    assert len(by_id.context["cl"].result_list) >= 1
    assert list(by_channel_id.context["cl"].result_list) == []


def test_tombstone_list_open_to_erasers(client, erased_tom):
    eraser = staff_user("ivy", "view_member", "erase_member")
    client.force_login(eraser)

    response = client.get(TOMBSTONE_LIST)

    assert response.status_code == 200


def test_lift_action_hidden_without_permission(client, erased_tom, ada):
    client.force_login(ada)

    response = client.get(TOMBSTONE_LIST)

    form = response.context["action_form"]
    choices = [] if form is None else form.fields["action"].choices
    assert response.status_code == 200
    assert "lift" not in [name for name, _label in choices]


def test_lift_action_needs_reason_and_is_audited(client, erased_tom, eve):
    ids = [str(pk) for pk in ErasureTombstone.objects.values_list("pk", flat=True)]
    assert ids
    client.force_login(eve)
    selected = {"action": "lift", "_selected_action": ids}

    confirm = client.post(TOMBSTONE_LIST, selected)
    blank = client.post(TOMBSTONE_LIST, {**selected, "apply": "1", "reason": ""})
    still_there = ErasureTombstone.objects.count()
    lifted = client.post(TOMBSTONE_LIST, {**selected, "apply": "1", "reason": "Back"})

    assert confirm.status_code == 200
    assert blank.status_code == 200
    assert still_there == len(ids)
    assert lifted.status_code == 302
    assert not ErasureTombstone.objects.exists()
    event = AuditEvent.objects.get(action=AuditAction.LIFT_TOMBSTONE)
    assert event.member_id == erased_tom.pk
    assert event.username == "eve"


# In the browser


@pytest.mark.browser
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_erase_in_browser_then_audit_list(live_server, chromium, store):
    member = make_member(store, "C-9", name="Wang Fang")
    Member.objects.filter(pk=member.pk).update(phone="13800138009")
    User.objects.create_superuser("root", password=PASSWORD)
    page = chromium.new_page(locale="en-US")
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("root")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    page.goto(f"{live_server.url}/admin/members/member/{member.pk}/change/")
    page.locator("a.erase-link").click()
    page.locator("textarea[name=reason]").fill("Ticket 12")
    page.locator("input[type=submit]").click()

    expect(page.locator(".erased-banner")).to_be_visible()
    page.locator("a.audit-link").click()
    rows = page.locator("#result_list tbody tr")
    expect(rows.filter(has_text="Erased personal data")).to_have_count(1)
    assert rows.count() == AuditEvent.objects.filter(member=member).count()
    member.refresh_from_db()
    assert member.name == ""


def test_member_edit_is_audited(client, tom_and_sam, root):
    tom, _sam = tom_and_sam
    client.force_login(root)
    url = f"/admin/members/member/{tom.pk}/change/"
    page = client.get(url).context
    form = page["adminform"].form
    data = {
        name: value
        for name, value in form.initial.items()
        if value is not None and name in form.fields
    }
    for inline in page["inline_admin_formsets"]:
        management = inline.formset.management_form
        # No inline rows are sent, so the channel ids stay as they are.
        data[f"{management.prefix}-TOTAL_FORMS"] = "0"
        data[f"{management.prefix}-INITIAL_FORMS"] = "0"
    data["email"] = "tom.new@example.com"

    response = client.post(url, data)

    errors = getattr(response, "context", None) and response.context["errors"]
    assert response.status_code == 302, errors

    (event,) = AuditEvent.objects.filter(action=AuditAction.CHANGE, member=tom)
    assert event.username == root.username
    assert event.detail == {"fields": ["email"]}
    assert "tom.new" not in str(event.detail)
