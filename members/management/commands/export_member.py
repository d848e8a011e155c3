"""Write one member's data to a file as JSON or a zip of CSV files, audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from members.models import Member
from members.privacy import can_view_personal_data
from members.rights import EXPORT_FORMATS, ExportFormat, export_member


def find_staff_user(username: str, permission: str) -> Any:
    """Return the active user ``username``, or raise CommandError unless permitted."""
    user = get_user_model().objects.filter(username=username, is_active=True).first()
    if user is None:
        raise CommandError(
            f"No active user {username!r}. Pass the user name of the staff member "
            "the action is recorded for in the audit log."
        )
    if not user.has_perm(permission):
        raise CommandError(
            f"User {username!r} lacks the permission {permission}. Grant it in the "
            "admin, or run the command as a user who has it."
        )
    return user


class Command(BaseCommand):
    help = (
        "Write everything stored about one member (profile, channel ids, "
        "activities, tier history, overrides, benefits, notifications) to a "
        "file, and record the export in the audit log as the given user."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("member_id", type=int, help="The member's id.")
        parser.add_argument(
            "--format",
            choices=EXPORT_FORMATS,
            default=ExportFormat.JSON,
            help="json (one UTF-8 file) or csv (a zip with one CSV per section).",
        )
        parser.add_argument(
            "--output",
            required=True,
            help="The file to write. An existing file is replaced.",
        )
        parser.add_argument(
            "--user",
            required=True,
            help="User name of the staff member recorded in the audit log. Needs "
            "the export and personal data permissions.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = find_staff_user(options["user"], "members.export")
        if not can_view_personal_data(user):
            raise CommandError(
                f"User {options['user']!r} may not see personal data unmasked "
                "(members.view_personal_data), so cannot export it."
            )
        member = Member.objects.filter(pk=options["member_id"]).first()
        if member is None:
            raise CommandError(f"Member {options['member_id']} not found.")
        output = Path(options["output"])

        export = export_member(member, user, options["format"])
        try:
            output.write_bytes(export.content)
        except OSError as error:
            raise CommandError(
                f"Could not write {output}: {error.strerror}. The export was "
                "recorded in the audit log."
            ) from error

        self.stdout.write(
            f"Wrote member {member.pk} as {options['format']} to {output} "
            f"({len(export.content)} bytes)."
        )
