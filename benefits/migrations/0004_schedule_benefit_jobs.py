"""Schedule the benefit jobs and mark existing tier changes as handled.

Tier changes recorded before benefit issuing existed are marked handled
without issuing anything. Otherwise the first issuing run would grant and
announce benefits for every promotion in the history.

An existing schedule of the same name, such as one that staff created in the
admin before this migration ran, is left as it is.
"""

import datetime as dt
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import migrations
from django.utils import timezone

# django_q.models.Schedule type codes and the "repeat forever" value of
# repeats. Historical models in migrations do not carry class constants.
MINUTES = "I"
HOURLY = "H"
DAILY = "D"
REPEAT_FOREVER = -1
# (schedule name, task, schedule type, minutes between runs for MINUTES)
SCHEDULES = [
    ("benefits-issuing", "benefits.issuing.issue_for_tier_changes", MINUTES, 5),
    ("benefits-stock", "benefits.issuing.issue_waiting_for_stock", MINUTES, 30),
    ("benefits-approvals", "benefits.approvals.approve_overdue_grants", MINUTES, 15),
    ("benefits-expiry", "benefits.expiry.expire_grants", HOURLY, None),
]
WARNINGS_SCHEDULE = "benefits-expiry-warnings"
WARNINGS_TASK = "benefits.expiry.warn_expiring_grants"
BATCH_SIZE = 5000


def next_local_time(now, hour):
    """Return the first ``hour``:00 in settings.TIME_ZONE that is after ``now``."""
    local_now = now.astimezone(ZoneInfo(settings.TIME_ZONE))
    run = local_now.replace(hour=hour, minute=0, second=0, microsecond=0)
    if run <= local_now:
        run += dt.timedelta(days=1)
    return run


def create_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    now = timezone.now()
    for name, task, schedule_type, minutes in SCHEDULES:
        Schedule.objects.get_or_create(
            name=name,
            defaults={
                "func": task,
                "schedule_type": schedule_type,
                "minutes": minutes,
                "repeats": REPEAT_FOREVER,
                "next_run": now,
            },
        )
    Schedule.objects.get_or_create(
        name=WARNINGS_SCHEDULE,
        defaults={
            "func": WARNINGS_TASK,
            "schedule_type": DAILY,
            "repeats": REPEAT_FOREVER,
            "next_run": next_local_time(now, 9),
        },
    )


def delete_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, task, _, _ in SCHEDULES:
        Schedule.objects.filter(name=name, func=task).delete()
    Schedule.objects.filter(name=WARNINGS_SCHEDULE, func=WARNINGS_TASK).delete()


def mark_existing_changes(apps, schema_editor):
    TierChange = apps.get_model("tiers", "TierChange")
    ProcessedTierChange = apps.get_model("benefits", "ProcessedTierChange")
    now = timezone.now()
    change_ids = TierChange.objects.order_by("pk").values_list("pk", flat=True)
    batch = []
    for change_id in change_ids.iterator(chunk_size=BATCH_SIZE):
        batch.append(
            ProcessedTierChange(
                change_id=change_id, processed_at=now, outcome="before_issuing"
            )
        )
        if len(batch) >= BATCH_SIZE:
            ProcessedTierChange.objects.bulk_create(batch)
            batch = []
    ProcessedTierChange.objects.bulk_create(batch)


def unmark_existing_changes(apps, schema_editor):
    ProcessedTierChange = apps.get_model("benefits", "ProcessedTierChange")
    ProcessedTierChange.objects.filter(outcome="before_issuing").delete()


class Migration(migrations.Migration):
    dependencies = [
        ("benefits", "0003_tier_benefits_and_grants"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.RunPython(mark_existing_changes, unmark_existing_changes),
        migrations.RunPython(create_schedules, delete_schedules),
    ]
