from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from tiers.dashboard import backfill_tier_snapshots

# Ten years of days: far more than any chart shows.
MAX_DAYS = 3660


class Command(BaseCommand):
    help = (
        "Rebuild the daily tier counts of past days from the tier history, for the "
        "dashboard's chart over time. Days already recorded are kept."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--days",
            type=int,
            default=365,
            help="How many days before today to fill (default 365).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["days"]
        if not 1 <= days <= MAX_DAYS:
            raise CommandError(f"--days {days} is invalid; use 1 to {MAX_DAYS}.")
        filled = backfill_tier_snapshots(days)
        self.stdout.write(f"Filled {filled} days of tier counts.")
