from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from tiers.evaluation import evaluate
from tiers.ladder import LadderError
from tiers.metrics import program_zone

# Earlier moments predate any plausible ledger, and before 1901 zoneinfo
# falls back to local mean time, which no store uses.
EARLIEST_AS_OF = dt.date(1990, 1, 1)


def parse_as_of(value: str) -> dt.datetime:
    """Read --as-of: a date means the end of that day in the program's zone.

    Future moments are rejected: evaluating as of a day that has not come
    would drop every member whose window then holds less than today.
    """
    value = value.strip()
    moment: dt.datetime | None = None
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            raise CommandError(
                f"--as-of {value!r} is not a date; use YYYY-MM-DD or an ISO date-time."
            ) from None
        if timezone.is_naive(moment):
            moment = moment.replace(tzinfo=program_zone())
    else:
        moment = dt.datetime.combine(day, dt.time.max, tzinfo=program_zone())
    if moment.date() < EARLIEST_AS_OF:
        raise CommandError(
            f"--as-of {value!r} is before {EARLIEST_AS_OF:%Y-%m-%d}; pick a date "
            "within the ledger."
        )
    now = timezone.now()
    if moment > now:
        if (
            moment.astimezone(program_zone()).date()
            == now.astimezone(program_zone()).date()
        ):
            return now
        raise CommandError(
            f"--as-of {value!r} is in the future; evaluate as of today or a past date."
        )
    return moment


class Command(BaseCommand):
    help = "Evaluate every member against the tier ladder and record tier changes."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--as-of",
            help="Evaluate as of this date (end of day, program time zone) or ISO "
            "date-time, not in the future. Default: now. Without --dry-run the "
            "resulting tiers are saved, replacing the current ones.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="Compute and report the tiers without writing anything.",
        )
        parser.add_argument(
            "--chunk-size",
            type=int,
            help="Members per chunk (default: the CRM_EVALUATION_CHUNK_SIZE setting).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        as_of = parse_as_of(options["as_of"]) if options["as_of"] is not None else None
        if options["chunk_size"] is not None and options["chunk_size"] < 1:
            raise CommandError("--chunk-size must be at least 1.")
        try:
            summary, _ = evaluate(
                as_of=as_of,
                commit=not options["dry_run"],
                chunk_size=options["chunk_size"],
            )
        except LadderError as error:
            raise CommandError(str(error)) from error
        dry_run = options["dry_run"]
        verb = "would change" if dry_run else "changed"
        self.stdout.write(
            f"Evaluated {summary.evaluated} members as of "
            f"{summary.as_of.astimezone(program_zone()):%Y-%m-%d %H:%M %Z}: "
            f"{verb} {summary.changed} ({summary.promoted} promoted, "
            f"{summary.demoted} demoted, {summary.initial} first placed)."
        )
        for name, count in sorted(summary.tier_counts.items()):
            self.stdout.write(f"  {name}: {count}")
        # Renewals and grace periods keep the tier, so they are not changes.
        renewed = "would be renewed" if dry_run else "renewed"
        started_grace = (
            "would start a grace period" if dry_run else "started a grace period"
        )
        self.stdout.write(
            f"Reviews: {summary.renewed} {renewed}, {summary.in_grace} {started_grace}."
        )
