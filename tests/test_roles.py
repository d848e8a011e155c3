"""Role groups: what each role can reach in the admin, and their synchronisation.

Each persona is a staff user whose only permissions come from one role
group, so these tests check the groups as shipped by members.roles.
"""

from __future__ import annotations

import io

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.management import call_command
from django.urls import NoReverseMatch, reverse

from members.models import ImportBatch
from members.roles import (
    AUDITOR,
    MANAGER,
    OPERATOR,
    ROLES,
    RULE_EDITOR,
    sync_roles,
)
from tests.conftest import local, make_member
from tiers.evaluation import evaluate
from tiers.models import RuleVersion, TierOverride
from tiers.overrides import request_override
from tiers.rules import copy_to_draft

pytestmark = pytest.mark.django_db

ALL_ROLES = [OPERATOR, RULE_EDITOR, MANAGER, AUDITOR]


def staff_in(role: str | None, username: str | None = None) -> User:
    user = User.objects.create_user(
        username or (role or "nobody").replace(" ", "-"), password="pw-12345-x"
    )
    user.is_staff = True
    user.save()
    if role is not None:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def view_only(db) -> User:
    """A staff user with every view permission of the project's apps, nothing else."""
    user = staff_in(None, "viewer")
    views = Permission.objects.filter(
        content_type__app_label__in=["members", "tiers", "benefits"],
        codename__startswith="view_",
    ).exclude(codename="view_personal_data")
    user.user_permissions.add(*views)
    return user


def status_for(client, user: User, url: str, method: str = "get") -> int:
    client.force_login(user)
    response = getattr(client, method)(url)
    return response.status_code


# The groups themselves


def test_migrate_creates_every_role_group():
    names = set(Group.objects.values_list("name", flat=True))

    assert set(ALL_ROLES) <= names


def test_groups_hold_exactly_listed_permissions():
    for role in ROLES:
        group = Group.objects.get(name=role.name)
        held = {
            f"{app}.{codename}"
            for app, codename in group.permissions.values_list(
                "content_type__app_label", "codename"
            )
        }
        assert held == role.permissions, role.name


def test_sync_roles_is_idempotent():
    changes = sync_roles()

    assert [change.added for change in changes] == [0, 0, 0, 0]
    assert [change.removed for change in changes] == [0, 0, 0, 0]
    assert not any(change.created for change in changes)


def test_sync_roles_removes_unlisted_permission():
    group = Group.objects.get(name=OPERATOR)
    extra = Permission.objects.get(codename="export", content_type__app_label="members")
    group.permissions.add(extra)

    sync_roles()

    assert not group.permissions.filter(pk=extra.pk).exists()


def test_sync_roles_restores_missing_permission():
    group = Group.objects.get(name=MANAGER)
    publish = Permission.objects.get(codename="publish_ruleversion")
    group.permissions.remove(publish)

    changes = sync_roles()

    assert group.permissions.filter(pk=publish.pk).exists()
    assert {change.name: change.added for change in changes}[MANAGER] == 1


def test_sync_roles_recreates_deleted_group():
    Group.objects.filter(name=AUDITOR).delete()

    changes = sync_roles()

    assert {change.name: change.created for change in changes}[AUDITOR] is True
    assert Group.objects.get(name=AUDITOR).permissions.count() > 0


def test_sync_roles_command_reports_each_group():
    output = io.StringIO()

    call_command("sync_roles", stdout=output)

    for name in ALL_ROLES:
        assert f"{name}: updated" in output.getvalue()


@pytest.mark.parametrize(
    ("role", "permission", "expected"),
    [
        (OPERATOR, "members.import", True),
        (OPERATOR, "members.export", False),
        (OPERATOR, "members.view_personal_data", False),
        (OPERATOR, "tiers.publish_ruleversion", False),
        (OPERATOR, "tiers.approve_tieroverride", False),
        (OPERATOR, "benefits.approve_grant", False),
        (RULE_EDITOR, "tiers.change_ruleversion", True),
        (RULE_EDITOR, "tiers.add_requirement", True),
        (RULE_EDITOR, "tiers.publish_ruleversion", False),
        (RULE_EDITOR, "members.import", False),
        (MANAGER, "members.import", True),
        (MANAGER, "members.export", True),
        (MANAGER, "members.view_personal_data", True),
        (MANAGER, "tiers.publish_ruleversion", True),
        (MANAGER, "tiers.approve_tieroverride", True),
        (MANAGER, "benefits.approve_grant", True),
        (MANAGER, "benefits.redeem_grant", True),
        (MANAGER, "members.erase_member", False),
        (AUDITOR, "members.view_auditevent", True),
        (AUDITOR, "members.view_member", True),
        (AUDITOR, "members.view_personal_data", False),
        (AUDITOR, "members.import", False),
        (AUDITOR, "members.export", False),
    ],
)
def test_role_permission(role, permission, expected):
    user = staff_in(role)

    assert user.has_perm(permission) is expected


def test_auditor_holds_only_view_permissions():
    auditor = next(role for role in ROLES if role.name == AUDITOR)

    writes = [name for name in auditor.permissions if ".view_" not in name]

    assert writes == []


# Import pages: reached with members.import only


def import_urls() -> list[str]:
    return [
        reverse("admin:members_member_import"),
        reverse("admin:members_activity_import"),
        reverse("members:large-import"),
        reverse("admin:members_opening_balances"),
    ]


@pytest.mark.parametrize("role", [OPERATOR, MANAGER])
def test_importer_roles_open_import_pages(client, role):
    user = staff_in(role)

    for url in import_urls():
        assert status_for(client, user, url) == 200, url


@pytest.mark.parametrize("role", [RULE_EDITOR, AUDITOR])
def test_other_roles_get_403_on_import_pages(client, role):
    user = staff_in(role)

    for url in import_urls():
        assert status_for(client, user, url) == 403, url


def test_view_only_user_gets_403_on_import_pages(client, view_only):
    for url in import_urls():
        assert status_for(client, view_only, url) == 403, url


def test_view_only_user_cannot_post_an_import(client, view_only):
    client.force_login(view_only)
    upload = io.BytesIO(b"external_id,name,channel\nM1,A,store\n")
    upload.name = "m.csv"

    large = client.post(
        reverse("members:large-import"), {"kind": "members", "file": upload}
    )
    upload.seek(0)
    openings = client.post(
        reverse("admin:members_opening_balances"), {"import_file": upload}
    )
    upload.seek(0)
    admin_import = client.post(
        reverse("admin:members_member_import"),
        {"import_file": upload, "format": "0"},
    )

    assert large.status_code == 403
    assert openings.status_code == 403
    assert admin_import.status_code == 403
    assert ImportBatch.objects.count() == 0


def test_view_only_user_cannot_confirm_a_batch(client, view_only, store):
    batch = ImportBatch.objects.create(
        kind="members", status=ImportBatch.Status.CHECKED, file_name="m.csv"
    )

    confirm = reverse("members:large-import-confirm", args=[batch.pk])
    openings_confirm = reverse(
        "admin:members_opening_balances_confirm", args=[batch.pk]
    )

    assert status_for(client, view_only, confirm, "post") == 403
    assert status_for(client, view_only, openings_confirm, "post") == 403


# Export


@pytest.mark.parametrize(
    ("role", "expected"),
    [(OPERATOR, 403), (RULE_EDITOR, 403), (AUDITOR, 403), (MANAGER, 200)],
)
def test_member_export_page(client, role, expected):
    user = staff_in(role)

    assert status_for(client, user, reverse("admin:members_member_export")) == expected


# Publishing a draft


@pytest.fixture
def draft(ladder) -> RuleVersion:
    return copy_to_draft(RuleVersion.objects.get(number=1))


@pytest.mark.parametrize(
    ("role", "expected"),
    [(OPERATOR, 403), (RULE_EDITOR, 403), (AUDITOR, 403), (MANAGER, 200)],
)
def test_publish_page(client, draft, role, expected):
    user = staff_in(role)
    url = reverse("admin:tiers_ruleversion_publish", args=[draft.pk])

    assert status_for(client, user, url) == expected


@pytest.mark.parametrize(
    ("role", "expected"),
    [(OPERATOR, 403), (AUDITOR, 403), (RULE_EDITOR, 200), (MANAGER, 200)],
)
def test_draft_change_page(client, draft, role, expected):
    user = staff_in(role)
    url = reverse("admin:tiers_ruleversion_change", args=[draft.pk])
    client.force_login(user)

    response = client.get(url)

    # A user with view permission only gets the read-only page (200), so
    # the check is whether the form can be saved.
    can_save = response.status_code == 200 and response.context["has_change_permission"]
    assert (200 if can_save else 403) == expected


# Override approval


@pytest.fixture
def pending_override(ladder, store) -> TierOverride:
    ladder["gold"].override_needs_approval = True
    ladder["gold"].save()
    member = make_member(store, "M-1")
    evaluate([member.pk], as_of=local(2024, 1, 1))
    requester = User.objects.create_superuser("requester", "", "pw-12345-x")
    override = request_override(
        member,
        ladder["gold"],
        TierOverride.Mode.ONE_OFF,
        "Complaint settled",
        requester,
        as_of=local(2024, 1, 10),
    )
    assert override.status == TierOverride.Status.PENDING
    return override


@pytest.mark.parametrize(
    ("role", "approved"),
    [(OPERATOR, False), (RULE_EDITOR, False), (AUDITOR, False), (MANAGER, True)],
)
def test_override_approval_action(client, pending_override, role, approved):
    user = staff_in(role)
    client.force_login(user)

    client.post(
        reverse("admin:tiers_tieroverride_changelist"),
        {"action": "approve_selected", "_selected_action": [pending_override.pk]},
    )

    pending_override.refresh_from_db()
    is_approved = pending_override.status != TierOverride.Status.PENDING
    assert is_approved is approved


# The audit log


def audit_log_url() -> str:
    try:
        return reverse("admin:members_auditevent_changelist")
    except NoReverseMatch:
        pytest.skip("the audit log admin (members.AuditEvent) is not registered")


@pytest.mark.parametrize(
    ("role", "expected"),
    [(AUDITOR, 200), (OPERATOR, 403), (RULE_EDITOR, 403)],
)
def test_audit_log_page(client, role, expected):
    user = staff_in(role)

    assert status_for(client, user, audit_log_url()) == expected
