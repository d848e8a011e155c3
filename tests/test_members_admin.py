"""The members admin: import preview and confirm, permissions, list pages."""

from __future__ import annotations

import base64
import datetime as dt
import re
from decimal import Decimal
from html.parser import HTMLParser

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation

from members.admin import render_explanation
from members.importing.service import import_file
from members.models import Activity, Member
from tests.conftest import CASES, local, record
from tiers.evaluation import evaluate, explain_member
from tiers.models import TierChange

CSV_FORMAT = "0"
XLSX_FORMAT = "1"


@pytest.fixture(autouse=True)
def english(client):
    """Ask for English pages: the program's default language is Chinese, and
    these tests read the English messages."""
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    with translation.override("en"):
        yield


@pytest.fixture
def base(db) -> None:
    import_file(CASES / "base_members.csv", "members")


@pytest.fixture
def admin_client(db, client):
    user = User.objects.create_superuser("admin", "admin@example.com", "pw-for-tests")
    client.force_login(user)
    return client


@pytest.fixture
def viewer_client(db, client):
    """A staff user who may view members and activities but not import them."""
    user = User.objects.create_user("viewer", "viewer@example.com", "pw", is_staff=True)
    user.user_permissions.add(
        Permission.objects.get(codename="view_member"),
        Permission.objects.get(codename="view_activity"),
    )
    client.force_login(user)
    return client


def upload(client, url_name: str, case: str, file_format: str = CSV_FORMAT, **choices):
    content = (CASES / case).read_bytes()
    data = {
        "resource": "0",
        "format": file_format,
        "import_file": SimpleUploadedFile(case, content),
        "encoding": choices.get("encoding", ""),
        "date_order": choices.get("date_order", ""),
    }
    return client.post(reverse(url_name), data)


def confirm(client, url_name: str, preview):
    form = preview.context["confirm_form"]
    return client.post(reverse(url_name), {**form.initial})


class _FormValues(HTMLParser):
    """Collects the values a browser would post from a page's inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        name = attributes.get("name")
        if tag == "input" and name and attributes.get("type") != "checkbox":
            self.values[name] = attributes.get("value") or ""
        elif tag == "select":
            self._select = name
        elif tag == "option" and self._select and "selected" in attributes:
            self.values[self._select] = attributes.get("value") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


def form_values(html: str) -> dict[str, str]:
    parser = _FormValues()
    parser.feed(html)
    return parser.values


# Import through the preview and confirm pages


def test_preview_shows_rejections_then_confirm_saves(base, admin_client):
    preview = upload(
        admin_client,
        "admin:members_activity_import",
        "c17_transactions_bad_amount_row.csv",
    )

    assert preview.status_code == 200
    content = preview.content.decode()
    assert "Rejected lines" in content
    assert "12.5O" in content
    assert "is not a valid amount" in content
    assert "import-issues.csv" in content
    assert preview.context["confirm_form"] is not None
    assert Activity.objects.count() == 0

    result = confirm(admin_client, "admin:members_activity_process_import", preview)

    assert result.status_code == 200
    assert result.context["report"].created == 3
    assert "12.5O" in result.content.decode()
    references = set(Activity.objects.values_list("reference", flat=True))
    assert references == {"CN-3001", "CN-3002", "CN-3004"}


def test_issues_csv_link_has_the_rejections(base, admin_client):
    preview = upload(
        admin_client,
        "admin:members_activity_import",
        "c17_transactions_bad_amount_row.csv",
    )

    url = preview.context["result"].issues_csv_url

    payload = base64.b64decode(url.split(",", 1)[1]).decode("utf-8-sig")
    assert payload.splitlines() == [
        "line,status,column,value,reason",
        "4,rejected,amount,12.5O,is not a valid amount",
    ]


def test_member_import_from_xlsx(base, admin_client):
    preview = upload(
        admin_client,
        "admin:members_member_import",
        "c02_members_phone_as_number.xlsx",
        XLSX_FORMAT,
    )
    confirm(admin_client, "admin:members_member_process_import", preview)

    phone = Member.objects.get(identities__external_id="1003").phone
    assert phone == "07700900123"


def test_rejected_file_shows_message_without_confirm(base, admin_client):
    preview = upload(
        admin_client,
        "admin:members_activity_import",
        "c10b_transactions_dates_ambiguous.csv",
    )

    assert preview.status_code == 200
    content = preview.content.decode()
    assert "File rejected" in content
    assert "occurred_at" in content
    assert "Traceback" not in content
    assert preview.context.get("confirm_form") is None


def test_date_order_choice_carried_to_confirm(base, admin_client):
    preview = upload(
        admin_client,
        "admin:members_activity_import",
        "c10b_transactions_dates_ambiguous.csv",
        date_order="day_first",
    )
    confirm(admin_client, "admin:members_activity_process_import", preview)

    assert Activity.objects.get(reference="UK-2101").occurred_at == local(2024, 4, 3)


def test_encoding_choice_carried_to_confirm(base, admin_client):
    preview = upload(
        admin_client,
        "admin:members_member_import",
        "c05_members_gbk.csv",
        encoding="gb18030",
    )
    confirm(admin_client, "admin:members_member_process_import", preview)

    assert Member.objects.filter(name="朱镕").exists()


def test_hostile_xlsx_gives_message_not_500(base, admin_client):
    preview = upload(
        admin_client,
        "admin:members_member_import",
        "c23_xlsx_billion_laughs.xlsx",
        XLSX_FORMAT,
    )

    assert preview.status_code == 200
    assert "not a valid or safe Excel file" in preview.content.decode()


def test_confirm_is_atomic_on_unexpected_error(base, ladder, admin_client, monkeypatch):
    preview = upload(
        admin_client, "admin:members_activity_import", "c20_transactions_duplicates.csv"
    )

    def fail(member_ids, **options):
        raise RuntimeError("database went away")

    monkeypatch.setattr("members.importing.batches.evaluate", fail)
    result = confirm(admin_client, "admin:members_activity_process_import", preview)

    assert result.status_code == 200
    assert "nothing was saved" in result.content.decode()
    assert Activity.objects.count() == 0


# Permissions


def test_view_only_user_sees_no_import_button(base, viewer_client):
    response = viewer_client.get(reverse("admin:members_member_changelist"))

    assert response.status_code == 200
    assert reverse("admin:members_member_import") not in response.content.decode()
    assert reverse("admin:members_member_export") not in response.content.decode()


def test_view_only_user_cannot_import(base, viewer_client):
    assert viewer_client.get(reverse("admin:members_member_import")).status_code == 403
    assert (
        viewer_client.get(reverse("admin:members_activity_import")).status_code == 403
    )
    response = viewer_client.post(reverse("admin:members_activity_process_import"), {})
    assert response.status_code == 403


def test_import_permission_opens_import_page(base, viewer_client):
    user = User.objects.get(username="viewer")
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="members", codename="import")
    )

    response = viewer_client.get(reverse("admin:members_member_import"))

    assert response.status_code == 200
    assert "Encoding (CSV only)" in response.content.decode()


def test_export_needs_export_permission(base, viewer_client):
    assert viewer_client.get(reverse("admin:members_member_export")).status_code == 403


def test_export_members_csv(base, admin_client):
    response = admin_client.post(
        reverse("admin:members_member_export"),
        {
            "resource": "0",
            "format": CSV_FORMAT,
            **{
                f"memberresource_{c}": "on"
                for c in (
                    "external_id",
                    "name",
                    "phone",
                    "email",
                    "channel",
                    "joined_at",
                )
            },
        },
    )

    assert response.status_code == 200
    lines = response.content.decode("utf-8-sig").splitlines()
    assert lines[0] == "external_id,name,phone,email,channel,joined_at"
    assert (
        "M0004,Priya Nair,'+447700900004,priya.nair@example.com,shopify,2023-08-03"
        in lines
    )


# List and change pages


def changelist_queries(client, url_name: str) -> int:
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse(url_name))
    assert response.status_code == 200
    return len(queries)


def test_member_changelist_queries_do_not_grow(base, ladder, admin_client):
    import_file(b"external_id,channel\nX1,tmall\n", "members", file_name="one.csv")
    few = changelist_queries(admin_client, "admin:members_member_changelist")
    rows = "\n".join(f"X{n},tmall" for n in range(2, 47))
    import_file(
        f"external_id,channel\n{rows}\n".encode(), "members", file_name="many.csv"
    )

    many = changelist_queries(admin_client, "admin:members_member_changelist")

    assert Member.objects.count() == 50
    # Both counts include one insert of the audit rows for the members the
    # superuser is shown unmasked, whatever their number.
    assert many == few


def test_activity_changelist_queries_do_not_grow(base, admin_client):
    lin = Member.objects.get(identities__external_id="M0001")
    store = lin.identities.get().channel
    for number in range(5):
        record(lin, store, "purchase", local(2024, 1, 1 + number), "10")
    few = changelist_queries(admin_client, "admin:members_activity_changelist")
    for number in range(45):
        record(lin, store, "purchase", local(2024, 2, 1 + number % 28), "10")

    many = changelist_queries(admin_client, "admin:members_activity_changelist")

    assert Activity.objects.count() == 50
    assert many == few


def test_member_page_shows_evaluation_and_history(base, ladder, admin_client):
    lin = Member.objects.get(identities__external_id="M0001")
    store = lin.identities.get().channel
    record(lin, store, "purchase", timezone.now() - dt.timedelta(days=30), "1200")
    import_file(
        b"external_id,channel,name\nM0001,store-xuhui,Lin X\n",
        "members",
        file_name="x.csv",
    )

    response = admin_client.get(
        reverse("admin:members_member_change", args=[lin.pk]), HTTP_ACCEPT_LANGUAGE="en"
    )

    content = response.content.decode()
    assert response.status_code == 200
    # The current evaluation panel and the history row each render a table.
    assert content.count('class="tier-explanation"') == 2
    assert "<td>net spend</td>" in content
    assert "<td>¥1,200</td>" in content
    assert "<td>met</td>" in content
    assert "<td>not met</td>" in content
    assert "— → Silver" in content


def test_tier_history_rows_have_no_none_title(base, ladder, admin_client):
    lin = Member.objects.get(identities__external_id="M0001")
    store = lin.identities.get().channel
    record(lin, store, "purchase", timezone.now() - dt.timedelta(days=30), "1200")
    evaluate([lin.pk])

    response = admin_client.get(reverse("admin:members_member_change", args=[lin.pk]))

    content = response.content.decode()
    assert TierChange.objects.filter(member=lin, from_tier=None).exists()
    assert "None →" not in content
    assert "— → Silver" in content


def test_explanation_as_of_in_program_zone(base, ladder, admin_client):
    lin = Member.objects.get(identities__external_id="M0001")
    as_of = dt.datetime(2026, 12, 4, 16, 10, 57, 713146, tzinfo=dt.UTC)

    html = render_explanation(explain_member(lin, as_of=as_of).explanation)

    assert "evaluated as of 2026-12-05 00:10" in html
    assert "+00:00" not in html
    assert "rule version 1," in html


def test_explanation_shows_retention_and_policy_hold():
    requirement = {
        "metric": "net_spend",
        "window": "rolling_days",
        "days": 365,
        "start": "2025-12-04T16:00:00+00:00",
        "end": "2026-12-04T16:10:00+00:00",
        "value": "3500",
        "threshold": "3000",
        "met": True,
    }
    explanation = {
        "as_of": "2026-12-04T16:10:57.713146+00:00",
        "version": 3,
        "tier_name": "Gold",
        "tiers": [
            {"name": "Gold", "reached": False, "requirements": [requirement]},
        ],
        "retention": {"name": "Gold", "reached": True, "requirements": [requirement]},
        "held_by_policy": "new_activity",
    }

    html = render_explanation(explanation)

    assert "<td>Gold (retention) ✓</td>" in html
    assert "Retention rules of Gold met: the member keeps Gold." in html
    assert "Tier kept by the publish policy: Apply only from new activity on." in html
    assert "Result: Gold (rule version 3, evaluated as of 2026-12-05 00:10)" in html


def test_explanation_without_version_still_renders():
    html = render_explanation(
        {"as_of": "2024-06-30T16:00:00+00:00", "tier_name": "Silver", "tiers": []}
    )

    assert "Result: Silver (evaluated as of 2024-07-01 00:00)" in html
    assert "Retention" not in html


def test_member_change_form_saves_beside_history(base, ladder, admin_client):
    lin = Member.objects.get(identities__external_id="M0001")
    evaluate([lin.pk])
    url = reverse("admin:members_member_change", args=[lin.pk])
    data = form_values(admin_client.get(url).content.decode())
    data["name"] = "Lin Renamed"

    response = admin_client.post(url, data)

    assert response.status_code == 302
    lin.refresh_from_db()
    assert lin.name == "Lin Renamed"


# Import form choices and messages

SEMICOLON_AMBIGUOUS = (
    b"external_id;occurred_at;amount;channel;kind;reference\n"
    b"M0001;2024-05-01 10:00;1.234;store-xuhui;purchase;EU-1\n"
    b"M0002;2024-05-01 11:00;2.500;tmall;purchase;EU-2\n"
)


def upload_bytes(client, url_name: str, content: bytes, **choices):
    data = {
        "resource": "0",
        "format": CSV_FORMAT,
        "import_file": SimpleUploadedFile("upload.csv", content),
        **choices,
    }
    return client.post(reverse(url_name), data)


def test_ambiguous_decimal_mark_rejected_in_admin(base, admin_client):
    preview = upload_bytes(
        admin_client, "admin:members_activity_import", SEMICOLON_AMBIGUOUS
    )

    content = preview.content.decode()
    assert "File rejected" in content
    assert "Column amount is ambiguous (decimal point or comma)" in content
    assert preview.context.get("confirm_form") is None


def test_decimal_mark_choice_carried_to_confirm(base, admin_client):
    preview = upload_bytes(
        admin_client,
        "admin:members_activity_import",
        SEMICOLON_AMBIGUOUS,
        decimal_mark="comma",
    )
    assert preview.context["confirm_form"].initial["decimal_mark"] == "comma"

    confirm(admin_client, "admin:members_activity_process_import", preview)

    amounts = dict(Activity.objects.values_list("reference", "amount"))
    assert amounts == {"EU-1": Decimal("1234.00"), "EU-2": Decimal("2500.00")}


def test_decimal_mark_offered_for_activities_only(base, admin_client):
    activity_page = admin_client.get(reverse("admin:members_activity_import"))
    member_page = admin_client.get(reverse("admin:members_member_import"))

    assert 'name="decimal_mark"' in activity_page.content.decode()
    assert 'name="decimal_mark"' not in member_page.content.decode()


def test_import_help_text_sits_under_its_select(base, admin_client):
    response = admin_client.get(reverse("admin:members_activity_import"))

    content = response.content.decode()
    for name in ("encoding", "date_order", "decimal_mark"):
        row = re.search(
            rf'<div class="form-row field-{name}">(.*?)</div>\s*</div>', content, re.S
        )
        assert row is not None, name
        assert re.search(
            rf'</select>\s*<div class="help" id="id_{name}_helptext">', row.group(1)
        ), name
    assert 'class="help" id="id_' in content
    assert '<p class="help">' not in content


@override_settings(
    CRM_IMPORT_MAX_BYTES=1024 * 1024, CRM_IMPORT_STREAMING_MAX_BYTES=1024 * 1024
)
def test_size_limit_message_matches_command(base, admin_client, tmp_path):
    content = b"x" * (1024 * 1024 + 1)
    path = tmp_path / "big.csv"
    path.write_bytes(content)

    response = upload_bytes(admin_client, "admin:members_member_import", content)
    with pytest.raises(CommandError) as raised:
        call_command("import_members", str(path))

    message = "The file is 1.1 MB, more than the 1 MB limit."
    assert message in response.content.decode()
    assert message in str(raised.value)


def test_header_only_file_rejected_in_admin(base, admin_client):
    preview = upload_bytes(
        admin_client,
        "admin:members_activity_import",
        b"external_id,occurred_at,amount,channel,kind,reference\n",
    )

    content = preview.content.decode()
    assert "File rejected" in content
    assert "The file has no data rows" in content
    assert preview.context.get("confirm_form") is None


@override_settings(CRM_IMPORT_ADMIN_MAX_BYTES=1024 * 1024)
def test_admin_sends_larger_files_to_background(base, admin_client):
    content = b"external_id,name,channel\n" + b"x,y,store-xuhui\n" * 80_000

    response = upload_bytes(admin_client, "admin:members_member_import", content)

    page = response.content.decode()
    assert "The file is 1.3 MB, more than the 1 MB this page previews" in page
    assert "Import a large file in the background" in page
    assert Member.objects.count() == 4
