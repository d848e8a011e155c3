"""Erase one member's personal data, leaving tombstones, audited."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from members.management.commands.export_member import find_staff_user
from members.models import Member
from members.rights import ErasureError, erase_member


class Command(BaseCommand):
    help = (
        "Erase a member's name, phone, e-mail and channel ids, keep the "
        "activities under a pseudonym, and store keyed hashes so that imports "
        "and channel events reject the person from now on. Recorded in the "
        "audit log as the given user."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("member_id", type=int, help="The member's id.")
        parser.add_argument(
            "--reason",
            required=True,
            help="Why the data is erased, e.g. the request's ticket number. Stored "
            "in the audit log.",
        )
        parser.add_argument(
            "--user",
            required=True,
            help="User name of the staff member recorded in the audit log. Needs "
            "the permission members.erase_member.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        user = find_staff_user(options["user"], "members.erase_member")
        member = Member.objects.filter(pk=options["member_id"]).first()
        if member is None:
            raise CommandError(f"Member {options['member_id']} not found.")

        try:
            result = erase_member(member, user, options["reason"])
        except ErasureError as error:
            raise CommandError(str(error)) from error

        self.stdout.write(
            f"Erased member {result.member_id}: {result.tombstones} tombstones, "
            f"{result.identities} channel ids replaced, "
            f"{result.messages_cancelled} pending messages cancelled."
        )
