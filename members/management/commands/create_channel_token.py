"""Create an event API token for a channel and print it once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from members.api_auth import issue_token
from members.importing.lookups import ChannelDirectory
from members.models import ChannelToken


class Command(BaseCommand):
    help = (
        "Create an event API token for a channel and print it on standard "
        "output. The token is shown only this once: store it in the channel's "
        "system right away. Revoke tokens in the admin under Channel API tokens."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("channel", help="The channel's code, e.g. store-xuhui.")
        parser.add_argument(
            "--name",
            required=True,
            help="What will use the token, e.g. 'Xuhui store tills'.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        code = options["channel"].strip()
        channel = ChannelDirectory().get(code)
        if channel is None:
            raise CommandError(
                f"Channel {code!r} not found. Create it in the admin under Channels "
                "first, or check the code."
            )
        name = options["name"].strip()
        if not name:
            raise CommandError("--name is empty. Say what will use the token.")
        max_name = ChannelToken._meta.get_field("name").max_length or 0
        if len(name) > max_name:
            raise CommandError(f"--name is longer than {max_name} characters.")

        row, token = issue_token(channel, name)
        self.stderr.write(
            f"Created token {row.prefix} for channel {channel.code} ({name}). "
            "It is shown only once:"
        )
        self.stdout.write(token)
