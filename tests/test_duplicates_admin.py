"""The admin pages for suspected duplicates, merging and reverting merges.

Personas: the manager may change and delete members, so the manager may
merge them. The clerk may only view members. The editor may change
members but not delete them. Tom (Xuhui store) and Sam (Tmall) share a
phone, and Ann and Bea share an e-mail address written in different case.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation

from members.admin_identity import merged_into_notice
from members.identity import suspected_duplicates
from members.merging import merge_members
from members.models import Activity, Channel, Member, MemberMerge
from tests.conftest import make_member, record

DUPLICATES = "admin:members_duplicates"
MERGE = "admin:members_merge"


@pytest.fixture(autouse=True)
def english(client):
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    with translation.override("en"):
        yield


def login(client: Client, username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, f"{username}@example.com", "pw")
    user.is_staff = True
    user.save()
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    client.force_login(user)
    return user


@pytest.fixture
def manager(client, db) -> User:
    # view_personal_data: the pages below show phones and names unmasked.
    return login(
        client,
        "manager",
        "view_member",
        "change_member",
        "delete_member",
        "view_personal_data",
    )


@pytest.fixture
def clerk(client, db) -> User:
    return login(client, "clerk", "view_member")


@pytest.fixture
def editor(client, db) -> User:
    return login(client, "editor", "view_member", "change_member")


@pytest.fixture
def tmall(db) -> Channel:
    return Channel.objects.create(code="tmall", name="Tmall", kind="ecommerce")


def member(channel: Channel, external_id: str, name: str, **fields) -> Member:
    created = make_member(channel, external_id, name=name)
    Member.objects.filter(pk=created.pk).update(**fields)
    created.refresh_from_db()
    return created


@pytest.fixture
def people(ladder, store, tmall) -> dict[str, Member]:
    tom = member(store, "C-1", "Tom", phone="13800138000", phone_e164="+8613800138000")
    sam = member(
        tmall, "T-9", "Sam", phone="138 0013 8000", phone_e164="+8613800138000"
    )
    ann = member(store, "C-2", "Ann", email="ann@example.com")
    bea = member(tmall, "T-3", "Bea", email="ANN@example.com")
    loner = member(store, "C-5", "Lone", phone_e164="+8613900139000")
    record(sam, tmall, "purchase", timezone.now() - dt.timedelta(days=3), "1200")
    return {"tom": tom, "sam": sam, "ann": ann, "bea": bea, "loner": loner}


# Suspected duplicates


def test_groups_by_phone_and_email(people):
    page, groups = suspected_duplicates()

    assert page.paginator.count == 2
    assert [(g.kind, g.value, g.size) for g in groups] == [
        ("email", "ann@example.com", 2),
        ("phone", "+8613800138000", 2),
    ]
    by_value = {g.value: g for g in groups}
    phone_group = by_value["+8613800138000"]
    assert [entry.member.pk for entry in phone_group.members] == [
        people["tom"].pk,
        people["sam"].pk,
    ]
    assert [entry.channels for entry in phone_group.members] == [
        ["store-xuhui"],
        ["tmall"],
    ]
    assert [entry.activity_count for entry in phone_group.members] == [0, 1]


def test_groups_paginated(people):
    first, groups = suspected_duplicates(1, per_page=1)
    second, more = suspected_duplicates(2, per_page=1)

    assert first.paginator.num_pages == 2
    assert [g.kind for g in groups] == ["email"]
    assert [g.kind for g in more] == ["phone"]
    assert second.has_next() is False


def test_duplicates_page_lists_groups(client, manager, people):
    response = client.get(reverse(DUPLICATES))

    assert response.status_code == 200
    content = response.content.decode()
    assert "Same phone +8613800138000: 2 members" in content
    assert "Same e-mail address ann@example.com: 2 members" in content
    merge_url = reverse(MERGE)
    assert f"{merge_url}?a={people['tom'].pk}&amp;b={people['sam'].pk}" in content
    assert "Lone" not in content


def test_duplicates_page_query_count(client, manager, people):
    client.get(reverse(DUPLICATES))

    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse(DUPLICATES))

    assert response.status_code == 200
    # Session and user, the user's permissions (two queries, cached for the
    # request), the group count, the page of groups, their members, the
    # members' channels, and one insert of the audit rows for the members
    # shown unmasked.
    assert len(queries) == 9, [q["sql"] for q in queries]


def test_clerk_sees_no_merge_links(client, clerk, people):
    response = client.get(reverse(DUPLICATES))

    assert response.status_code == 200
    assert "Same phone" in response.content.decode()
    assert reverse(MERGE) not in response.content.decode()


def test_duplicates_need_view_permission(client, db):
    login(client, "outsider")

    response = client.get(reverse(DUPLICATES))

    assert response.status_code == 403


def test_member_merges_on_admin_index(client, manager, people):
    response = client.get(reverse("admin:index"))

    content = response.content.decode()
    assert reverse("admin:members_membermerge_changelist") in content
    add = client.get(reverse("admin:members_membermerge_add"))
    assert add.status_code == 302
    assert add["Location"] == reverse(DUPLICATES)


def test_merge_list_links_duplicates(client, manager, people):
    response = client.get(reverse("admin:members_membermerge_changelist"))

    assert response.status_code == 200
    assert reverse(DUPLICATES) in response.content.decode()


# Merge form


def merge_url(a: Member, b: Member, keep: Member | None = None) -> str:
    url = f"{reverse(MERGE)}?a={a.pk}&b={b.pk}"
    return f"{url}&keep={keep.pk}" if keep else url


def test_merge_form_compares_members(client, manager, people):
    tom, sam = people["tom"], people["sam"]

    response = client.get(merge_url(tom, sam))

    assert response.status_code == 200
    content = response.content.decode()
    assert (
        f'Kept: <a href="{reverse("admin:members_member_change", args=[tom.pk])}"'
        in content
    )
    assert "store-xuhui:C-1" in content
    assert "tmall:T-9" in content
    assert "Activities: 1 row moves to the kept member." in content
    assert f"Merge #{sam.pk} into #{tom.pk}" in content
    assert f"Keep member #{sam.pk} instead" in content


def test_merge_form_swaps_kept_member(client, manager, people):
    tom, sam = people["tom"], people["sam"]

    response = client.get(merge_url(tom, sam, keep=sam))

    assert f"Merge #{tom.pk} into #{sam.pk}" in response.content.decode()


def test_merge_needs_reason_and_confirmation(client, manager, people):
    tom, sam = people["tom"], people["sam"]

    response = client.post(
        reverse(MERGE), {"source": sam.pk, "target": tom.pk, "reason": ""}
    )

    assert response.status_code == 200
    assert response.context["form"].errors.keys() == {"reason", "confirm"}
    assert MemberMerge.objects.count() == 0


def test_merge_from_form(client, manager, people):
    tom, sam = people["tom"], people["sam"]

    response = client.post(
        reverse(MERGE),
        {"source": sam.pk, "target": tom.pk, "reason": "same phone", "confirm": "on"},
    )

    merge = MemberMerge.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse(
        "admin:members_membermerge_change", args=[merge.pk]
    )
    assert merge.merged_by == manager
    assert Activity.objects.get().member == tom
    sam.refresh_from_db()
    assert sam.merged_into == tom


def test_merge_form_shows_refusal(client, manager, people):
    tom = people["tom"]

    response = client.post(
        reverse(MERGE),
        {"source": tom.pk, "target": tom.pk, "reason": "x", "confirm": "on"},
    )

    assert response.status_code == 200
    assert "cannot be merged into itself" in response.content.decode()


def test_merge_form_unknown_member(client, manager, people):
    response = client.get(f"{reverse(MERGE)}?a={people['tom'].pk}&b=999999")

    assert response.status_code == 200
    assert "Choose two existing members" in response.content.decode()


def test_merge_needs_delete_permission(client, editor, people):
    tom, sam = people["tom"], people["sam"]

    form = client.get(merge_url(tom, sam))
    post = client.post(
        reverse(MERGE),
        {"source": sam.pk, "target": tom.pk, "reason": "same", "confirm": "on"},
    )

    assert form.status_code == 403
    assert post.status_code == 403
    assert MemberMerge.objects.count() == 0


# Merge records and revert


@pytest.fixture
def merge(people) -> MemberMerge:
    """Sam merged into Tom by a supervisor, who is not logged in to ``client``."""
    supervisor = User.objects.create_user("supervisor")
    return merge_members(people["sam"], people["tom"], user=supervisor, reason="same")


def test_merge_list_query_count(client, manager, merge, people):
    other = member(Channel.objects.get(code="tmall"), "T-4", "Other")
    merge_members(other, people["ann"], user=merge.merged_by, reason="same")
    url = reverse("admin:members_membermerge_changelist")
    client.get(url)

    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)

    assert response.status_code == 200
    # Members are named by their masked name and id, as str(member) does.
    assert str(people["tom"]) in response.content.decode()
    # Session and user, permissions (two), the filtered count, the total
    # count and the page of merges joined to both members and the user.
    assert len(queries) == 7, [q["sql"] for q in queries]


def test_merge_page_offers_revert(client, manager, merge):
    response = client.get(reverse("admin:members_membermerge_change", args=[merge.pk]))

    content = response.content.decode()
    assert response.status_code == 200
    revert_url = reverse("admin:members_membermerge_revert", args=[merge.pk])
    assert revert_url in content
    assert "Activities" in content
    assert 'name="_save"' not in content


def test_clerk_sees_no_revert(client, clerk, merge):
    response = client.get(reverse("admin:members_membermerge_change", args=[merge.pk]))

    assert response.status_code == 403


def test_revert_asks_confirmation(client, manager, merge):
    url = reverse("admin:members_membermerge_revert", args=[merge.pk])

    response = client.get(url)

    assert response.status_code == 200
    assert "Yes, revert this merge" in response.content.decode()
    merge.refresh_from_db()
    assert merge.status == MemberMerge.Status.MERGED


def test_revert_from_admin(client, manager, merge, people):
    url = reverse("admin:members_membermerge_revert", args=[merge.pk])

    response = client.post(url)
    again = client.post(url, follow=True)

    assert response.status_code == 302
    merge.refresh_from_db()
    assert merge.status == MemberMerge.Status.REVERTED
    assert merge.reverted_by == manager
    people["sam"].refresh_from_db()
    assert people["sam"].merged_into is None
    assert "already reverted" in again.content.decode()


def test_revert_needs_csrf_token(manager, merge):
    strict = Client(enforce_csrf_checks=True, HTTP_ACCEPT_LANGUAGE="en")
    strict.force_login(manager)

    response = strict.post(reverse("admin:members_membermerge_revert", args=[merge.pk]))

    assert response.status_code == 403
    merge.refresh_from_db()
    assert merge.status == MemberMerge.Status.MERGED


def test_revert_needs_merge_permission(client, editor, merge):
    response = client.post(reverse("admin:members_membermerge_revert", args=[merge.pk]))

    assert response.status_code == 403
    merge.refresh_from_db()
    assert merge.status == MemberMerge.Status.MERGED


def test_merged_into_notice(merge, people):
    sam, tom = people["sam"], people["tom"]
    sam.refresh_from_db()

    notice = merged_into_notice(sam)

    assert reverse("admin:members_member_change", args=[tom.pk]) in notice
    assert reverse("admin:members_membermerge_change", args=[merge.pk]) in notice
    assert merged_into_notice(tom) == "—"
