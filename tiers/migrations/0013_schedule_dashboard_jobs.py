"""Schedule the daily tier snapshot at 00:10 and the member outlook refresh at
03:00, both in the program's time zone.

The snapshot counts the members per tier just after midnight, so each day of
the charts is a whole day. The outlook refresh runs after the nightly reviews
at 02:00, so the queues show the tiers those reviews left. An existing
schedule of the same name is left as it is.
"""

import datetime as dt
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import migrations
from django.utils import timezone

# (schedule name, task, hour, minute)
SCHEDULES = [
    ("tier-snapshot", "tiers.dashboard.record_tier_snapshot", 0, 10),
    ("member-outlooks", "tiers.outlook.refresh_outlooks", 3, 0),
]
# django_q.models.Schedule.DAILY and the "repeat forever" value of repeats.
# Historical models in migrations do not carry class constants.
DAILY = "D"
REPEAT_FOREVER = -1


def first_run(now: dt.datetime, hour: int, minute: int) -> dt.datetime:
    """Return the first hour:minute in settings.TIME_ZONE that is after ``now``."""
    local_now = now.astimezone(ZoneInfo(settings.TIME_ZONE))
    run = local_now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if run <= local_now:
        run += dt.timedelta(days=1)
    return run


def create_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    now = timezone.now()
    for name, task, hour, minute in SCHEDULES:
        Schedule.objects.get_or_create(
            name=name,
            defaults={
                "func": task,
                "schedule_type": DAILY,
                "repeats": REPEAT_FOREVER,
                "next_run": first_run(now, hour, minute),
            },
        )


def delete_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, task, _hour, _minute in SCHEDULES:
        Schedule.objects.filter(name=name, func=task).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("tiers", "0012_dashboard_and_work_queues"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedules, delete_schedules)]
