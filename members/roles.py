"""Staff roles shipped as auth groups, and their idempotent synchronisation.

Each role is a group name and the exact permissions ("app_label.codename")
it holds. ``sync_roles`` runs after every ``migrate`` (see members.apps)
and from ``manage.py sync_roles``. It creates missing groups, adds missing
permissions and removes permissions that a role no longer lists, so a group
always matches this file. Permissions given to users one by one are left
alone.

No role has members.erase_member, because erasure is granted to named
people one by one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.db.models import Q

logger = logging.getLogger(__name__)

OPERATOR = "operator"
RULE_EDITOR = "rule editor"
MANAGER = "manager"
AUDITOR = "auditor"


def _each(app_label: str, actions: Iterable[str], models: Iterable[str]) -> set[str]:
    """Return "app.action_model" for every action and model given."""
    return {f"{app_label}.{action}_{model}" for model in models for action in actions}


@dataclass(frozen=True)
class Role:
    name: str
    permissions: frozenset[str]


# Viewing what daily work needs: members and their ledger, imports, tiers,
# the rules in effect and the benefits issued.
_OPERATOR_VIEWS = (
    _each(
        "members",
        ["view"],
        [
            "member",
            "activity",
            "activitykind",
            "channel",
            "channelidentity",
            "importbatch",
            "importissue",
            "columnmapping",
            "membermerge",
        ],
    )
    | _each(
        "tiers",
        ["view"],
        [
            "tier",
            "tierchange",
            "tieroverride",
            "ruleversion",
            "tierrule",
            "rulegroup",
            "requirement",
            "growthweight",
            "memberoutlook",
        ],
    )
    | _each("benefits", ["view"], ["benefit", "tierbenefit", "benefitpool", "grant"])
)

# members.import opens the admin import pages, the background import, the
# opening-balance import and the rollback of import batches. It is the only
# write an operator has, besides the column mappings that imports use.
OPERATOR_PERMISSIONS = frozenset(
    _OPERATOR_VIEWS
    | {"members.import"}
    | _each("members", ["add", "change"], ["columnmapping"])
)

# Drafts only: tiers.admin rejects changes to published versions, and only
# tiers.publish_ruleversion publishes.
RULE_EDITOR_PERMISSIONS = frozenset(
    _each("tiers", ["view", "add", "change", "delete"], ["ruleversion"])
    | _each("tiers", ["view", "add", "change"], ["tier"])
    | _each(
        "tiers",
        ["view", "add", "change", "delete"],
        ["tierrule", "rulegroup", "requirement", "growthweight"],
    )
    | _each("tiers", ["view"], ["tierchange"])
    | _each("members", ["view"], ["member", "activitykind", "channel"])
    | _each("benefits", ["view"], ["benefit", "tierbenefit", "benefitpool"])
)

MANAGER_PERMISSIONS = frozenset(
    OPERATOR_PERMISSIONS
    | RULE_EDITOR_PERMISSIONS
    | {
        "members.export",
        "members.view_personal_data",
        "tiers.publish_ruleversion",
        "tiers.approve_tieroverride",
        "benefits.approve_grant",
        "benefits.redeem_grant",
    }
    # Merging members needs change and delete on members (members.admin_identity).
    | _each("members", ["add", "change", "delete"], ["member"])
    | _each("members", ["add", "change"], ["activity", "membermerge"])
    | _each("tiers", ["add", "change"], ["tieroverride", "reviewextension"])
    | _each("tiers", ["view"], ["reviewextension", "reviewwarning"])
    | _each("benefits", ["change"], ["grant"])
    | _each(
        "benefits", ["view", "add", "change"], ["benefit", "tierbenefit", "benefitpool"]
    )
    | _each("members", ["view", "change"], ["outboxmessage"])
)

# Read-only on everything staff work with, the audit log and failed logins
# included. Without members.view_personal_data, phones and e-mails show
# masked, which is enough to follow who did what to which member id.
AUDITOR_PERMISSIONS = frozenset(
    _each(
        "members",
        ["view"],
        [
            "member",
            "activity",
            "activitykind",
            "channel",
            "channelidentity",
            "channeltoken",
            "columnmapping",
            "importbatch",
            "importissue",
            "importedmember",
            "membermerge",
            "outboxmessage",
            "auditevent",
            "erasuretombstone",
        ],
    )
    | _each(
        "tiers",
        ["view"],
        [
            "tier",
            "tierchange",
            "tieroverride",
            "ruleversion",
            "tierrule",
            "rulegroup",
            "requirement",
            "growthweight",
            "reviewextension",
            "reviewwarning",
            "memberoutlook",
            "tiersnapshot",
            "historicalruleversion",
            "historicaltier",
            "historicaltierrule",
            "historicalrulegroup",
            "historicalrequirement",
            "historicalgrowthweight",
            "historicaltieroverride",
        ],
    )
    | _each(
        "benefits",
        ["view"],
        [
            "benefit",
            "tierbenefit",
            "benefitpool",
            "grant",
            "tierperiod",
            "processedtierchange",
        ],
    )
    | _each("auth", ["view"], ["user", "group"])
    | _each("axes", ["view"], ["accessattempt"])
)

ROLES = (
    Role(OPERATOR, OPERATOR_PERMISSIONS),
    Role(RULE_EDITOR, RULE_EDITOR_PERMISSIONS),
    Role(MANAGER, MANAGER_PERMISSIONS),
    Role(AUDITOR, AUDITOR_PERMISSIONS),
)


@dataclass(frozen=True)
class RoleChange:
    name: str
    created: bool
    added: int
    removed: int


def _load_permissions(names: set[str], using: str) -> dict[str, Permission]:
    """Return {"app.codename": Permission} for ``names`` in one query."""
    condition = Q()
    for name in names:
        app_label, codename = name.split(".", 1)
        condition |= Q(content_type__app_label=app_label, codename=codename)
    permissions = Permission.objects.using(using).filter(condition)
    found = {
        f"{permission.content_type.app_label}.{permission.codename}": permission
        for permission in permissions.select_related("content_type")
    }
    missing = sorted(names - found.keys())
    if missing:
        raise LookupError(
            "Role permissions not found: "
            + ", ".join(missing)
            + ". Run `manage.py migrate` first, or fix the name in members/roles.py."
        )
    return found


def sync_roles(using: str = "default") -> list[RoleChange]:
    """Create or update every role group to hold exactly its listed permissions.

    Raises LookupError naming any listed permission that does not exist.
    """
    every_name = set().union(*(role.permissions for role in ROLES))
    permissions = _load_permissions(every_name, using)
    changes = []
    with transaction.atomic(using=using):
        for role in ROLES:
            group, created = Group.objects.using(using).get_or_create(name=role.name)
            listed = {permissions[name].pk for name in role.permissions}
            current = set(group.permissions.values_list("pk", flat=True))
            group.permissions.add(*(listed - current))
            group.permissions.remove(*(current - listed))
            changes.append(
                RoleChange(
                    name=role.name,
                    created=created,
                    added=len(listed - current),
                    removed=len(current - listed),
                )
            )
    for change in changes:
        if change.created or change.added or change.removed:
            logger.info(
                "role synced group=%s created=%s added=%d removed=%d",
                change.name, change.created, change.added, change.removed,
            )  # fmt: skip
    return changes
