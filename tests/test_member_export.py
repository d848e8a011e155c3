"""Exporting one member's data: contents, query count, CSV zip, command, admin.

Personas: Lin Wei is a member of the Xuhui store in Silver, with a welcome
coupon she redeemed, a free shipping benefit and their messages. Auditor
Ada has the export and personal data permissions; viewer Vic may only view
members.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import zipfile
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from benefits.issuing import issue_for_tier_changes
from benefits.models import Grant
from benefits.redemption import redeem
from members.merging import merge_members
from members.models import AuditAction, AuditEvent, Member
from members.rights import export_member, export_member_data, render_csv_zip
from tests.conftest import make_member, record
from tests.test_benefits_support import create_catalogue
from tiers.evaluation import evaluate
from tiers.overrides import request_override

NOW = timezone.now()
SECTIONS = (
    "merged_members",
    "activities",
    "tier_changes",
    "tier_overrides",
    "benefit_grants",
    "redemptions",
    "notifications",
)


def grant_permissions(user: User, *codenames: str) -> User:
    for codename in codenames:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    # Django caches permissions on the user object, so read the user again.
    return User.objects.get(pk=user.pk)


@pytest.fixture
def ada(db) -> User:
    user = User.objects.create_user("ada", password="pw", is_staff=True)
    return grant_permissions(user, "view_member", "export", "view_personal_data")


@pytest.fixture
def vic(db) -> User:
    user = User.objects.create_user("vic", password="pw", is_staff=True)
    return grant_permissions(user, "view_member")


def lin_wei(store, purchases: int = 2) -> Member:
    """Lin Wei in Silver, with her welcome coupon redeemed at the store."""
    member = make_member(store, "C-0042", name="Lin Wei")
    Member.objects.filter(pk=member.pk).update(
        phone="138 0013 8000", phone_e164="+8613800138000", email="lin@example.com"
    )
    for number in range(purchases):
        record(member, store, "purchase", NOW - dt.timedelta(days=number + 1), "600")
    evaluate([member.pk])
    issue_for_tier_changes()
    coupon = Grant.objects.get(member=member, benefit__name="Welcome coupon ¥50")
    redeem(code=coupon.code, channel=store, reference="ORDER-1")
    member.refresh_from_db()
    return member


@pytest.fixture
def lin(ladder, store) -> Member:
    create_catalogue(ladder)
    return lin_wei(store)


def test_export_has_every_section(lin):
    data = export_member_data(lin)

    profile = data["profile"]
    assert profile["name"] == "Lin Wei"
    assert profile["phone_e164"] == "+8613800138000"
    assert profile["email"] == "lin@example.com"
    assert profile["tier"] == "Silver"
    assert profile["channel_ids"] == [
        {
            "channel": "store-xuhui",
            "external_id": "C-0042",
            "created_at": profile["channel_ids"][0]["created_at"],
        }
    ]
    assert len(data["activities"]) == 2
    assert sum(a["amount"] for a in data["activities"]) == Decimal("1200")
    assert [c["to_tier"] for c in data["tier_changes"]] == ["Silver"]
    assert data["tier_changes"][0]["explanation"]["tiers"]
    grants = {g["benefit"]: g for g in data["benefit_grants"]}
    assert set(grants) == {"Welcome coupon ¥50", "Free shipping"}
    assert grants["Welcome coupon ¥50"]["status"] == Grant.Status.REDEEMED
    assert [r["reference"] for r in data["redemptions"]] == ["ORDER-1"]
    assert data["notifications"]
    assert all(n["subject"] for n in data["notifications"])


def test_export_lists_overrides(lin, ladder):
    request_override(lin, ladder["bronze"], "one_off", "Test downgrade", user=None)

    data = export_member_data(lin)

    assert [o["tier"] for o in data["tier_overrides"]] == ["Bronze"]
    assert data["tier_overrides"][0]["reason"] == "Test downgrade"


def test_export_query_count_is_fixed(ladder, store):
    create_catalogue(ladder)
    small = lin_wei(store, purchases=2)
    big = make_member(store, "C-0099", name="Big Spender")
    for number in range(40):
        record(big, store, "purchase", NOW - dt.timedelta(hours=number + 1), "300")
    evaluate([big.pk])
    issue_for_tier_changes()

    with CaptureQueriesContext(connection) as small_queries:
        export_member_data(small)
    with CaptureQueriesContext(connection) as big_queries:
        data = export_member_data(big)

    assert len(data["activities"]) == 40
    # The member with its tier, channel ids, members merged into it,
    # activities, tier changes, overrides, grants and outbox messages.
    assert len(small_queries) == 8
    assert len(big_queries) == 8


def test_export_includes_merged_members(lin, store):
    root = User.objects.create_superuser("root", password="pw")
    twin = make_member(store, "C-0098", name="Lin W.")
    Member.objects.filter(pk=twin.pk).update(phone="13900001111")
    merge_members(twin, lin, user=root, reason="Same person")

    data = export_member_data(lin)
    archive = zipfile.ZipFile(io.BytesIO(render_csv_zip(data)))

    (merged,) = data["merged_members"]
    assert merged["id"] == twin.pk
    assert merged["name"] == "Lin W."
    assert merged["phone"] == "13900001111"
    assert "13900001111" in archive.read("merged_members.csv").decode("utf-8-sig")


def test_json_export_is_utf8_with_sorted_keys(lin, ada):
    export = export_member(lin, ada, "json")

    text = export.content.decode("utf-8")
    assert "Welcome coupon ¥50" in text
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert export.content_type == "application/json"


def test_csv_zip_has_one_file_per_section(lin, ada):
    export = export_member(lin, ada, "csv")

    archive = zipfile.ZipFile(io.BytesIO(export.content))
    expected = {"profile.csv", "channel_ids.csv"} | {f"{s}.csv" for s in SECTIONS}
    assert set(archive.namelist()) == expected
    for name in archive.namelist():
        assert archive.read(name).startswith("\ufeff".encode())
    profile_text = archive.read("profile.csv").decode("utf-8-sig")
    profile = dict(csv.reader(io.StringIO(profile_text)))
    assert profile["name"] == "Lin Wei"
    assert profile["email"] == "lin@example.com"
    activities = list(
        csv.DictReader(io.StringIO(archive.read("activities.csv").decode("utf-8-sig")))
    )
    assert len(activities) == 2
    assert {row["amount"] for row in activities} == {"600.00"}


def test_csv_export_quotes_formulas(lin):
    Member.objects.filter(pk=lin.pk).update(name="=HYPERLINK(1)")
    data = export_member_data(lin)

    archive = zipfile.ZipFile(io.BytesIO(render_csv_zip(data)))

    profile_text = archive.read("profile.csv").decode("utf-8-sig")
    assert dict(csv.reader(io.StringIO(profile_text)))["name"] == "'=HYPERLINK(1)"


def test_export_records_audit_event(lin, ada):
    export_member(lin, ada, "csv")

    event = AuditEvent.objects.get(action=AuditAction.EXPORT_MEMBER)
    assert event.member_id == lin.pk
    assert event.user == ada
    assert event.detail["format"] == "csv"
    assert "Lin" not in json.dumps(event.detail)


def test_export_rejects_unknown_format(lin, ada):
    with pytest.raises(ValueError, match="xml"):
        export_member(lin, ada, "xml")
    assert not AuditEvent.objects.exists()


def test_export_command_writes_file(lin, ada, tmp_path):
    output = tmp_path / "lin.json"

    call_command(
        "export_member", str(lin.pk), "--format", "json", "--output", str(output),
        "--user", "ada",
    )  # fmt: skip

    assert json.loads(output.read_text("utf-8"))["profile"]["name"] == "Lin Wei"
    event = AuditEvent.objects.get(action=AuditAction.EXPORT_MEMBER)
    assert event.username == "ada"


def test_export_command_needs_permission(lin, vic, tmp_path):
    output = tmp_path / "lin.json"

    with pytest.raises(CommandError, match="members.export"):
        call_command(
            "export_member", str(lin.pk), "--output", str(output), "--user", "vic"
        )
    assert not output.exists()


def test_admin_export_downloads_json(client, lin, ada):
    client.force_login(ada)

    response = client.get(f"/admin/members/member/{lin.pk}/export/?format=json")

    assert response.status_code == 200
    assert "attachment" in response["Content-Disposition"]
    assert json.loads(response.content)["profile"]["email"] == "lin@example.com"
    assert AuditEvent.objects.filter(action=AuditAction.EXPORT_MEMBER).count() == 1


def test_admin_export_downloads_csv_zip(client, lin, ada):
    client.force_login(ada)

    response = client.get(f"/admin/members/member/{lin.pk}/export/?format=csv")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/zip"
    assert "profile.csv" in zipfile.ZipFile(io.BytesIO(response.content)).namelist()


def test_admin_export_forbidden_for_viewer(client, lin, vic):
    client.force_login(vic)

    response = client.get(f"/admin/members/member/{lin.pk}/export/?format=json")

    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action=AuditAction.EXPORT_MEMBER).exists()


def test_admin_export_needs_personal_data_permission(client, lin):
    exporter = User.objects.create_user("exporter", password="pw", is_staff=True)
    exporter = grant_permissions(exporter, "view_member", "export")
    client.force_login(exporter)

    response = client.get(f"/admin/members/member/{lin.pk}/export/?format=json")

    assert response.status_code == 403


def test_change_page_shows_export_links(client, lin, ada, vic):
    client.force_login(ada)
    page = client.get(f"/admin/members/member/{lin.pk}/change/").content.decode()
    client.force_login(vic)
    viewer_page = client.get(f"/admin/members/member/{lin.pk}/change/").content.decode()

    assert f"/admin/members/member/{lin.pk}/export/?format=csv" in page
    assert "/export/" not in viewer_page
