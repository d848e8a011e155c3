"""Create or update the staff role groups from members.roles."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from members.roles import ROLES, sync_roles


class Command(BaseCommand):
    help = (
        "Create the groups operator, rule editor, manager and auditor, or update "
        "them to hold exactly the permissions listed in members/roles.py. "
        "migrate runs this too."
    )

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--database", default="default", help="Database alias to write to."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            changes = sync_roles(using=options["database"])
        except LookupError as error:
            raise CommandError(str(error)) from None
        sizes = {role.name: len(role.permissions) for role in ROLES}
        for change in changes:
            state = "created" if change.created else "updated"
            self.stdout.write(
                f"{change.name}: {state}, {sizes[change.name]} permissions "
                f"({change.added} added, {change.removed} removed)"
            )
