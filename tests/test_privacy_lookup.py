"""Finding a member by phone or e-mail through the POST form of the member admin.

The changelist search travels in the URL, so it no longer covers phones,
e-mails or names. The lookup form takes them in its body, normalises the
phone, records the lookup, and redirects by member id.
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from members.models import AuditAction, AuditEvent, Member
from tests.conftest import make_member

LOOKUP = "admin:members_member_lookup"
PHONE = "13812345678"
EMAIL = "Mei.Han@Example.com"


def staff_client(username: str, *codenames: str) -> tuple[Client, User]:
    user = User.objects.create_user(username, "", "pw", is_staff=True)
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client = Client(headers={"accept-language": "en"})
    client.force_login(user)
    return client, user


@pytest.fixture
def mei(store) -> Member:
    member = make_member(store, "C-1", name="韩梅梅")
    Member.objects.filter(pk=member.pk).update(
        phone="138 1234 5678", phone_e164="+86" + PHONE, email=EMAIL
    )
    return member


@pytest.fixture
def clerk(db) -> tuple[Client, User]:
    return staff_client("clerk", "view_member")


@pytest.mark.parametrize(
    "typed",
    [PHONE, "+86 138-1234-5678", "８６１３８１２３４５６７８", "mei.han@example.COM"],
)
def test_lookup_redirects_to_the_member(mei, clerk, typed):
    client, user = clerk

    response = client.post(reverse(LOOKUP), {"contact": typed})

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:members_member_change", args=[mei.pk])
    event = AuditEvent.objects.get(action=AuditAction.LOOKUP)
    assert event.user == user
    assert event.member_id == mei.pk
    assert event.count == 1


def test_lookup_of_shared_phone_lists_members_by_id(mei, store, clerk):
    twin = make_member(store, "C-2", name="韩梅")
    Member.objects.filter(pk=twin.pk).update(phone_e164="+86" + PHONE)
    client, _user = clerk

    response = client.post(reverse(LOOKUP), {"contact": PHONE})

    assert response.status_code == 302
    location = response["Location"]
    assert location == (
        f"{reverse('admin:members_member_changelist')}?id__in={mei.pk},{twin.pk}"
    )
    assert PHONE not in location
    listed = client.get(location)
    assert listed.status_code == 200
    assert list(listed.context["cl"].result_list) == [mei, twin]
    assert PHONE not in listed.content.decode()
    event = AuditEvent.objects.get(action=AuditAction.LOOKUP)
    assert event.member_id is None
    assert event.count == 2
    assert event.detail == {"by": "phone", "matches": 2}


def test_lookup_without_match_shows_error(mei, clerk):
    client, _user = clerk

    response = client.post(reverse(LOOKUP), {"contact": "13900000000"})

    assert response.status_code == 200
    assert "No member has this phone or e-mail address." in response.content.decode()
    assert AuditEvent.objects.get(action=AuditAction.LOOKUP).count == 0


def test_lookup_rejects_other_text(mei, clerk):
    client, _user = clerk

    response = client.post(reverse(LOOKUP), {"contact": "Han Meimei"})

    assert response.status_code == 200
    assert "Enter a phone number or an e-mail address." in response.content.decode()
    assert not AuditEvent.objects.exists()


def test_lookup_matches_invalid_phone_as_stored(store, clerk):
    member = make_member(store, "C-3")
    Member.objects.filter(pk=member.pk).update(phone="12345")
    client, _user = clerk

    response = client.post(reverse(LOOKUP), {"contact": "12345"})

    assert response["Location"].endswith(f"/{member.pk}/change/")


def test_lookup_needs_view_permission(mei, db):
    client, _user = staff_client("outsider")

    assert client.get(reverse(LOOKUP)).status_code == 403
    assert client.post(reverse(LOOKUP), {"contact": PHONE}).status_code == 403
    assert not AuditEvent.objects.exists()


def test_lookup_needs_csrf_token(mei, db):
    user = User.objects.create_user("csrf", "", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_member"))
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post(reverse(LOOKUP), {"contact": PHONE})

    assert response.status_code == 403
    assert not AuditEvent.objects.exists()


def test_changelist_links_lookup_form(mei, clerk):
    client, _user = clerk

    response = client.get(reverse("admin:members_member_changelist"))

    assert reverse(LOOKUP) in response.content.decode()


def test_changelist_search_ignores_phone_and_name(mei, clerk):
    client, _user = clerk
    url = reverse("admin:members_member_changelist")

    by_phone = client.get(url, {"q": PHONE}).context["cl"].result_list
    by_name = client.get(url, {"q": "韩梅梅"}).context["cl"].result_list
    by_channel_id = client.get(url, {"q": "C-1"}).context["cl"].result_list
    by_member_id = client.get(url, {"q": str(mei.pk)}).context["cl"].result_list

    assert list(by_phone) == []
    assert list(by_name) == []
    assert list(by_channel_id) == [mei]
    assert list(by_member_id) == [mei]


@pytest.mark.parametrize(
    "params",
    [
        {"phone__startswith": "138"},
        {"phone_e164": "+86" + PHONE},
        {"email__istartswith": "mei"},
        {"name__startswith": "韩"},
        {"name": "韩梅梅"},
    ],
)
def test_changelist_rejects_personal_filters(mei, clerk, params):
    client, _user = clerk
    url = reverse("admin:members_member_changelist")

    response = client.get(url, {"id": str(mei.pk), **params})

    assert response.status_code == 400


def test_changelist_rejects_personal_filters_for_managers(mei, db):
    client, _user = staff_client("lead", "view_member", "view_personal_data")
    url = reverse("admin:members_member_changelist")

    response = client.get(url, {"phone__startswith": "138"})

    assert response.status_code == 400


def test_masked_columns_are_not_sortable(mei, store, clerk):
    client, _user = clerk
    other = make_member(store, "C-2", name="阿强")
    Member.objects.filter(pk=other.pk).update(phone="13000000000")
    url = reverse("admin:members_member_changelist")

    # Column 2 is the phone. Sorting by it must not change the order.
    ascending = client.get(url, {"o": "2"}).context["cl"].result_list
    descending = client.get(url, {"o": "-2"}).context["cl"].result_list

    assert [m.pk for m in ascending] == [m.pk for m in descending]


def test_unmasked_columns_stay_sortable(mei, store, db):
    client, _user = staff_client("lead", "view_member", "view_personal_data")
    other = make_member(store, "C-2", name="阿强")
    Member.objects.filter(pk=other.pk).update(phone="13000000000")
    url = reverse("admin:members_member_changelist")

    ascending = client.get(url, {"o": "2"}).context["cl"].result_list
    descending = client.get(url, {"o": "-2"}).context["cl"].result_list

    assert [m.pk for m in ascending] == [other.pk, mei.pk]
    assert [m.pk for m in descending] == [mei.pk, other.pk]


def test_masked_lookups_limited_per_hour(mei, clerk, settings):
    settings.CRM_LOOKUP_LIMIT_PER_HOUR = 3
    client, _user = clerk
    url = reverse(LOOKUP)

    answers = [
        client.post(url, {"contact": f"1381234{number:04d}"}).status_code
        for number in range(5)
    ]

    assert answers[:3] == [200, 200, 200]
    assert answers[3:] == [429, 429]
    assert AuditEvent.objects.filter(action=AuditAction.LOOKUP).count() == 3


def test_unmasked_lookups_not_limited(mei, db, settings):
    settings.CRM_LOOKUP_LIMIT_PER_HOUR = 1
    client, _user = staff_client("lead", "view_member", "view_personal_data")
    url = reverse(LOOKUP)

    answers = [client.post(url, {"contact": PHONE}).status_code for _ in range(3)]

    assert answers == [302, 302, 302]
