"""Free text that may quote a phone stays out of reach of masked staff.

Reasons and audit details can quote a member's phone. Staff without the
personal data permission see them masked, and no one can filter on them
through the URL, which would rebuild them one guess at a time.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from members.audit import record_event
from members.models import AuditAction
from tests.conftest import make_member
from tiers.overrides import request_override

PHONE = "13812345678"


def staff_client(username: str, *codenames: str) -> Client:
    user = User.objects.create_user(username, "", "pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client(headers={"accept-language": "en"})
    client.force_login(user)
    return client


@pytest.fixture
def override(ladder, store):
    member = make_member(store, "F-1", name="Fan Bing")
    requester = User.objects.create_user("req", "", "pw", is_staff=True)
    return request_override(
        member, ladder["silver"], "one_off", f"called from {PHONE}", user=requester
    )


@pytest.fixture
def viewer(db) -> Client:
    return staff_client("viewer", "view_member", "view_tieroverride", "view_auditevent")


@pytest.mark.parametrize(
    "path",
    [
        "/admin/tiers/tieroverride/?reason__contains=138123",
        "/admin/members/auditevent/?detail__contains=138123",
        "/admin/members/membermerge/?reason__contains=138123",
        "/admin/tiers/tierchange/?explanation__contains=138123",
        "/admin/members/outboxmessage/?params__contains=138123",
    ],
)
def test_free_text_filters_rejected(override, path):
    client = staff_client(
        "boss",
        "view_member",
        "view_personal_data",
        "view_tieroverride",
        "view_auditevent",
        "view_membermerge",
        "view_tierchange",
        "view_outboxmessage",
    )

    response = client.get(path)

    assert response.status_code == 400


def test_override_search_ignores_reason(override, viewer):
    response = viewer.get("/admin/tiers/tieroverride/", {"q": PHONE})

    assert list(response.context["cl"].result_list) == []


def test_override_reason_masked_for_viewer(override, viewer):
    page = viewer.get(f"/admin/tiers/tieroverride/{override.pk}/change/")

    text = page.content.decode()
    assert page.status_code == 200
    assert PHONE not in text
    assert "138****5678" in text


def test_override_reason_shown_with_permission(override):
    client = staff_client(
        "boss", "view_member", "view_tieroverride", "view_personal_data"
    )

    page = client.get(f"/admin/tiers/tieroverride/{override.pk}/change/")

    assert PHONE in page.content.decode()


def test_override_history_needs_permission(override, viewer):
    response = viewer.get(f"/admin/tiers/tieroverride/{override.pk}/history/")

    assert response.status_code == 403


def test_audit_detail_filter_rejected_for_auditor(override, viewer):
    record_event(None, AuditAction.ERASE, detail={"reason": "x"})

    response = viewer.get("/admin/members/auditevent/", {"detail__contains": "x"})

    assert response.status_code == 400
