"""Masking of members' personal data, and the audit of unmasked views.

Two members with known phones and e-mails are shown on every page, export,
API response and log that can carry them, as users of each role. Users
without members.view_personal_data must never see the full values; users
with it see them, and each member they saw is in the audit log.
"""

from __future__ import annotations

import base64
import io
import logging
import sys
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.template import Context, Template
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from benefits.issuing import issue_for_tier_changes
from benefits.models import Grant
from crm.logging import MaskPersonalDataFilter
from members.api_auth import issue_token
from members.importing.service import import_file
from members.links import member_page_url
from members.merging import merge_members
from members.models import (
    AuditAction,
    AuditEvent,
    Channel,
    ImportBatch,
    Member,
    MemberMerge,
    OutboxMessage,
)
from members.privacy import (
    mask_email,
    mask_name,
    mask_phone,
    mask_text,
    member_label,
)
from members.resources import MemberResource
from tests.conftest import make_member
from tests.test_benefits_support import create_catalogue, member_in_silver
from tiers.models import TierChange

try:
    from members import roles
except ImportError:  # members.roles, which defines the role groups, is missing
    roles = None  # type: ignore[assignment]

WANG_PHONE = "13812345678"
LI_PHONE = "+8613912345678"
WANG_EMAIL = "xiaoming.wang@example.com"
LI_EMAIL = "lei.li@example.com"
WANG_NAME = "王小明"
LI_NAME = "李雷"
# A value counts as leaked when any of these appears: the national digits
# cover the phone as typed, in E.164 and with a country code.
PHONE_DIGITS = ("13812345678", "13912345678")
EMAILS = (WANG_EMAIL, LI_EMAIL)
NAMES = (WANG_NAME, LI_NAME)


# Masks


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("13812345678", "138****5678"),
        ("138 1234 5678", "138****5678"),
        ("+8613912345678", "+86 139****5678"),
        ("+86 139 1234 5678", "+86 139****5678"),
        ("010-88886666", "010****6666"),
        ("+44 7700 900004", "+447****0004"),
        ("12345", "****45"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_mask_phone(phone, masked):
    assert mask_phone(phone) == masked


@pytest.mark.parametrize(
    ("email", "masked"),
    [
        ("xiaoming.wang@example.com", "x***@example.com"),
        ("A@b.cn", "A***@b.cn"),
        ("no-at-sign", "n***"),
        ("", ""),
    ],
)
def test_mask_email(email, masked):
    assert mask_email(email) == masked


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("王小明", "王**"),
        ("李雷", "李*"),
        ("李", "李*"),
        ("Alexander", "A***"),
        ("", ""),
    ],
)
def test_mask_name(name, masked):
    assert mask_name(name) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("call 13812345678 now", "call 138****5678 now"),
        ("phone=+86 138 1234 5678;", "phone=+86 138****5678;"),
        ("tel13812345678", "tel138****5678"),
        ("(021) 6666 8888", "021****8888"),
        ("mail lei.li@example.com.", "mail l***@example.com."),
        ("13812345678@qq.com", "1***@qq.com"),
        ("at 2026-12-04 23:58:57.607607+08:00", "at 2026-12-04 23:58:57.607607+08:00"),
        ("batch=12 rows=3400 amount=12.50", "batch=12 rows=3400 amount=12.50"),
        ("", ""),
    ],
)
def test_mask_text(text, masked):
    assert mask_text(text) == masked


def test_mask_text_leaves_masked_text_alone():
    once = mask_text("13812345678 and a@b.com")

    assert mask_text(once) == once


def test_member_str_is_masked(db):
    member = Member.objects.create(name=WANG_NAME)

    assert str(member) == f"王** #{member.pk}"
    assert str(Member.objects.create(name="")) == f"#{member.pk + 1}"
    assert member_label("", None) == ""


def test_template_filter_masks_for_user(db):
    template = Template("{% load privacy %}{{ value|personal_text_for:user }}")
    masked_user = _staff("clerk")
    allowed_user = _staff("allowed", "view_personal_data")
    value = f"{WANG_PHONE} / {WANG_EMAIL}"

    masked = template.render(Context({"value": value, "user": masked_user}))
    allowed = template.render(Context({"value": value, "user": allowed_user}))
    anonymous = template.render(Context({"value": value, "user": None}))

    assert masked == "138****5678 / x***@example.com"
    assert allowed == value
    assert anonymous == masked


# Log filter


def test_log_filter_masks_message_args_and_exception():
    record_filter = MaskPersonalDataFilter()
    try:
        raise ValueError(f"duplicate key {WANG_PHONE}")
    except ValueError:
        record = logging.getLogger("test").makeRecord(
            "test",
            logging.ERROR,
            __file__,
            1,
            "lookup phone=%s email=%s",
            (WANG_PHONE, WANG_EMAIL),
            exc_info=sys.exc_info(),
        )

    assert record_filter.filter(record) is True
    assert record.getMessage() == "lookup phone=138****5678 email=x***@example.com"
    assert record.exc_text
    assert WANG_PHONE not in record.exc_text
    assert "138****5678" in record.exc_text


def test_log_filter_keeps_malformed_calls():
    record = logging.getLogger("test").makeRecord(
        "test", logging.INFO, __file__, 1, "two %s %s", (WANG_PHONE,), None
    )

    MaskPersonalDataFilter().filter(record)

    assert WANG_PHONE not in record.getMessage()
    assert "two %s %s" in record.getMessage()


@pytest.fixture
def console_output() -> Iterator[io.StringIO]:
    """The text written by the handlers that settings.LOGGING installs."""
    stream = io.StringIO()
    handlers = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler, logging.StreamHandler)
        and any(isinstance(f, MaskPersonalDataFilter) for f in handler.filters)
    ]
    assert handlers, "settings.LOGGING installs no masking handler"
    previous = [handler.setStream(stream) for handler in handlers]
    yield stream
    for handler, old in zip(handlers, previous, strict=True):
        handler.setStream(old)


def test_configured_handler_masks_logs(console_output):
    logging.getLogger("members.test").warning("member phone %s", LI_PHONE)

    assert "139****5678" in console_output.getvalue()
    assert "13912345678" not in console_output.getvalue()


def test_request_logs_are_masked(console_output):
    logging.getLogger("django.server").info('"GET /x/?p=%s HTTP/1.1" 200', LI_PHONE)
    logging.getLogger("django.request").warning("Not Found: /x/%s", LI_PHONE)

    output = console_output.getvalue()
    assert output.count("139****5678") == 2
    assert LI_PHONE not in output


# The scan over pages, exports, the API and logs


@pytest.fixture
def people(ladder, store) -> dict[str, Member]:
    """Wang and Li, plus Li's duplicate from Tmall that was merged into Li."""
    tmall = Channel.objects.create(code="tmall", name="Tmall", kind="ecommerce")
    create_catalogue(ladder)
    wang = member_in_silver(store, "C-1", timezone.now(), name=WANG_NAME)
    li = make_member(store, "C-2", name=LI_NAME)
    twin = make_member(tmall, "T-2", name=LI_NAME)
    li_spare = make_member(tmall, "T-3", name=LI_NAME)
    Member.objects.filter(pk=wang.pk).update(
        phone=WANG_PHONE, phone_e164="+86" + WANG_PHONE, email=WANG_EMAIL
    )
    Member.objects.filter(pk__in=[li.pk, twin.pk, li_spare.pk]).update(
        phone=LI_PHONE, phone_e164=LI_PHONE, email=LI_EMAIL
    )
    issue_for_tier_changes()
    supervisor = User.objects.create_superuser("supervisor", "", "pw")
    merge_members(twin, li, user=supervisor, reason=f"same phone {LI_PHONE}")
    OutboxMessage.objects.create(
        member=wang, channel="email", topic="promotion", key="k-1", language="en"
    )
    # A rejected line whose faulty value is a phone, for the issue pages.
    import_file(
        f"external_id,channel,name,email\nC-9,store-xuhui,X,{WANG_PHONE}\n".encode(),
        "members",
        file_name="contacts.csv",
    )
    return {"wang": Member.objects.get(pk=wang.pk), "li": Member.objects.get(pk=li.pk)}


def _staff(username: str, *codenames: str, groups: tuple[str, ...] = ()) -> User:
    user = User.objects.create_user(username, "", "pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    for name in groups:
        user.groups.add(Group.objects.get(name=name))
    return user


def _view_codenames() -> list[str]:
    views = Permission.objects.filter(
        content_type__app_label__in=["members", "tiers", "benefits"],
        codename__startswith="view_",
    ).exclude(codename="view_personal_data")
    return list(views.values_list("codename", flat=True))


# Roles without the permission to view personal data; each builds its user.
MASKED_ROLES = ["viewer", "exporter", "merger"]
UNMASKED_ROLES = ["superuser", "privileged"]
if roles is not None:
    MASKED_ROLES += [roles.OPERATOR, roles.RULE_EDITOR, roles.AUDITOR]
    UNMASKED_ROLES += [roles.MANAGER]


def user_for(role: str) -> User:
    if role == "superuser":
        return User.objects.create_superuser("root", "", "pw")
    if role == "viewer":
        return _staff("viewer", *_view_codenames())
    if role == "exporter":
        return _staff("exporter", *_view_codenames(), "export", "import")
    if role == "merger":
        return _staff("merger", *_view_codenames(), "change_member", "delete_member")
    if role == "privileged":
        return _staff(
            "privileged", *_view_codenames(), "export", "import", "view_personal_data"
        )
    roles.sync_roles()
    return _staff(role.replace(" ", "-"), groups=(role,))


def admin_urls(people: dict[str, Member]) -> list[str]:
    wang, li = people["wang"], people["li"]
    merge = MemberMerge.objects.get(target=li).pk
    batch = ImportBatch.objects.get(file_name="contacts.csv").pk
    change = TierChange.objects.filter(member=wang).first()
    urls = [
        reverse("admin:members_member_changelist"),
        reverse("admin:members_member_change", args=[wang.pk]),
        reverse("admin:members_member_change", args=[li.pk]),
        reverse("admin:members_member_why", args=[wang.pk]),
        reverse("admin:members_member_history", args=[wang.pk]),
        reverse("admin:members_member_lookup"),
        f"{reverse('admin:members_member_changelist')}?_popup=1&_to_field=id",
        reverse("admin:members_activity_changelist"),
        reverse("admin:members_duplicates"),
        reverse("admin:members_merge") + f"?a={li.pk}&b={wang.pk}",
        reverse("admin:members_membermerge_changelist"),
        reverse("admin:members_membermerge_change", args=[merge]),
        reverse("admin:members_importbatch_change", args=[batch]),
        reverse("admin:members_importbatch_issues", args=[batch]),
        reverse("admin:members_outboxmessage_changelist"),
        reverse("admin:tiers_tierchange_changelist"),
        reverse("admin:benefits_grant_changelist"),
        reverse("admin:index"),
    ]
    if change is not None:
        urls.append(reverse("admin:tiers_tierchange_change", args=[change.pk]))
    grant = Grant.objects.filter(member=wang).first()
    if grant is not None:
        urls.append(reverse("admin:benefits_grant_change", args=[grant.pk]))
    return urls


def page_text(client: Client, url: str) -> tuple[int, str]:
    response = client.get(url)
    if response.streaming:
        body = b"".join(response.streaming_content)  # type: ignore[arg-type]
    else:
        body = response.content
    return response.status_code, body.decode("utf-8", errors="replace")


def leaks(text: str, values: tuple[str, ...] = PHONE_DIGITS + EMAILS) -> list[str]:
    return [value for value in values if value in text]


@pytest.mark.parametrize("role", MASKED_ROLES)
def test_admin_pages_mask_personal_data(people, role):
    client = Client(headers={"accept-language": "en"})
    client.force_login(user_for(role))

    opened = []
    for url in admin_urls(people):
        status, text = page_text(client, url)
        assert status in (200, 403), (url, status)
        if status == 200:
            opened.append(url)
            assert leaks(text, PHONE_DIGITS + EMAILS + NAMES) == [], url

    assert reverse("admin:members_member_changelist") in opened
    assert reverse("admin:members_duplicates") in opened
    if role == "merger":
        assert any(url.startswith(reverse("admin:members_merge")) for url in opened)
    assert not AuditEvent.objects.filter(action=AuditAction.VIEW_PERSONAL).exists()


@pytest.mark.parametrize("role", UNMASKED_ROLES)
def test_admin_pages_show_and_record_personal_data(people, role):
    user = user_for(role)
    client = Client(headers={"accept-language": "en"})
    client.force_login(user)
    wang = people["wang"]

    status, text = page_text(
        client, reverse("admin:members_member_change", args=[wang.pk])
    )

    assert status == 200
    assert WANG_PHONE in text
    assert WANG_EMAIL in text
    assert WANG_NAME in text
    seen = AuditEvent.objects.filter(action=AuditAction.VIEW_PERSONAL, user=user)
    assert list(seen.values_list("member_id", flat=True)) == [wang.pk]

    status, text = page_text(client, reverse("admin:members_member_changelist"))

    assert status == 200
    assert LI_EMAIL in text
    # The list shows every live and merged member: one row each.
    assert seen.count() == 1 + Member.objects.count()

    status, text = page_text(client, reverse("admin:members_duplicates"))

    assert status == 200
    assert LI_PHONE in text
    assert seen.filter(detail__page="suspected duplicates").count() == 2


def test_change_form_fields_are_read_only_when_masked(people):
    client = Client()
    client.force_login(
        _staff("editor", *_view_codenames(), "change_member", "view_personal_data")
    )
    masked = Client()
    masked.force_login(_staff("clerk", *_view_codenames(), "change_member"))
    wang = people["wang"]
    url = reverse("admin:members_member_change", args=[wang.pk])

    editable = client.get(url).context["adminform"].form.fields
    readonly = masked.get(url).context["adminform"].form.fields
    masked.post(url, {"name": "Changed", "phone": "13000000000", "language": "en"})

    assert {"name", "phone", "email"} <= set(editable)
    assert not {"name", "phone", "email", "phone_e164"} & set(readonly)
    wang.refresh_from_db()
    assert wang.name == WANG_NAME
    assert wang.phone == WANG_PHONE


def test_member_page_shows_no_contact_data(people):
    status, text = page_text(Client(), member_page_url(people["wang"]))

    assert status == 200
    assert leaks(text) == []


# Exports


EXPORT_FIELDS = ("external_id", "name", "phone", "email", "channel", "joined_at")


def export_members(client: Client) -> tuple[int, str]:
    response = client.post(
        reverse("admin:members_member_export"),
        {
            "resource": "0",
            "format": "0",
            **{f"memberresource_{field}": "on" for field in EXPORT_FIELDS},
        },
    )
    return response.status_code, response.content.decode("utf-8-sig")


def test_export_is_masked_without_permission(people):
    client = Client()
    client.force_login(user_for("exporter"))

    status, text = export_members(client)

    assert status == 200
    assert "138****5678" in text
    assert "王**" in text
    assert leaks(text, PHONE_DIGITS + EMAILS + NAMES) == []
    event = AuditEvent.objects.get(action=AuditAction.EXPORT)
    assert event.count == len(text.strip().splitlines()) - 1
    assert event.detail == {"model": "member", "masked": True}


def test_export_is_full_with_permission(people):
    client = Client()
    client.force_login(user_for("privileged"))

    status, text = export_members(client)

    assert status == 200
    assert WANG_PHONE in text
    assert LI_EMAIL in text
    event = AuditEvent.objects.get(action=AuditAction.EXPORT)
    assert event.detail == {"model": "member", "masked": False}
    assert event.count >= 4


def test_resource_without_admin_exports_stored_values(people):
    exported = MemberResource().export(Member.objects.all()).csv

    assert WANG_PHONE in exported
    assert "138****5678" in MemberResource(masked=True).export(Member.objects.all()).csv


def test_activity_export_is_recorded(people):
    client = Client()
    client.force_login(user_for("exporter"))

    response = client.post(
        reverse("admin:members_activity_export"),
        {"resource": "0", "format": "0", "activityresource_external_id": "on"},
    )

    assert response.status_code == 200
    event = AuditEvent.objects.get(action=AuditAction.EXPORT)
    assert event.detail["model"] == "activity"


# Import pages


def test_import_preview_masks_rejected_values(people):
    client = Client(headers={"accept-language": "en"})
    client.force_login(user_for("exporter"))
    content = f"external_id,channel,name,email\nC-8,store-xuhui,Y,{LI_PHONE}\n"

    response = client.post(
        reverse("admin:members_member_import"),
        {
            "resource": "0",
            "format": "0",
            "import_file": SimpleUploadedFile("more.csv", content.encode()),
        },
    )

    assert response.status_code == 200
    text = response.content.decode()
    # A phone in the e-mail column is masked as an e-mail cell, wholly.
    assert mask_email(LI_PHONE) in text
    assert leaks(text) == []
    # The download link embeds the CSV as base64; decode and check it too.
    result = response.context["result"]
    encoded = result.issues_csv_url.partition("base64,")[2]
    assert leaks(base64.b64decode(encoded).decode("utf-8-sig")) == []


# API and logs


def test_api_responses_and_logs_mask_contact_data(
    people, store, caplog, console_output
):
    token = issue_token(store, "tills")[1]
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    event = {
        "external_id": "C-1",
        "reference": "R-77",
        "occurred_at": timezone.now().isoformat(),
        "amount": "5.00",
        "kind": "purchase",
        "phone": WANG_PHONE,
        "email": "not an e-mail " + WANG_EMAIL,
    }
    caplog.set_level(logging.DEBUG)

    invalid = api.post(reverse("api-events"), event, format="json")
    created = api.post(
        reverse("api-events"), {**event, "email": LI_EMAIL}, format="json"
    )
    read = api.get(reverse("api-member-tier", args=[people["wang"].public_id]))
    import_file(
        f"external_id,channel,phone,email\nC-88,store-xuhui,{LI_PHONE},x@\n".encode(),
        "members",
        file_name=f"contacts-{WANG_PHONE}.csv",
    )

    assert invalid.status_code == 422
    assert created.status_code == 201, created.json()["errors"]
    assert read.status_code in (200, 404)
    for response in (invalid, created, read):
        assert leaks(response.content.decode()) == []
    assert leaks(console_output.getvalue()) == []
    assert leaks(caplog.text) == []
    assert "contacts-138****5678.csv" in console_output.getvalue()


def test_request_log_keeps_status_and_size(console_output):
    logging.getLogger("django.server").info(
        '"%s" %s %s', "GET /admin/?q=alice%40example.org HTTP/1.1", "200", "1558"
    )
    logging.getLogger("django.server").info(
        '"%s" %s %s', "GET /admin/?q=139+1234+5678 HTTP/1.1", "200", "1558"
    )

    output = console_output.getvalue()
    assert output.count('" 200 1558') == 2
    assert "alice%40example.org" not in output
    assert "alice@example.org" not in output
    assert "139+1234+5678" not in output
    assert "139****5678" in output
