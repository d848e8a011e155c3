"""Schedule the nightly tier reviews daily at 02:00 in the program's time zone.

An existing schedule of the same name, such as one that staff created in the
admin before this migration ran, is left as it is.
"""

import datetime as dt
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import migrations
from django.utils import timezone

SCHEDULE_NAME = "nightly-reviews"
TASK = "tiers.jobs.run_nightly_reviews"
# django_q.models.Schedule.DAILY and the "repeat forever" value of repeats.
# Historical models in migrations do not carry class constants.
DAILY = "D"
REPEAT_FOREVER = -1


def first_run(now: dt.datetime) -> dt.datetime:
    """Return the first 02:00 in settings.TIME_ZONE that is after ``now``."""
    local_now = now.astimezone(ZoneInfo(settings.TIME_ZONE))
    run = local_now.replace(hour=2, minute=0, second=0, microsecond=0)
    if run <= local_now:
        # Aware arithmetic keeps the wall-clock time, so this is 02:00 too.
        run += dt.timedelta(days=1)
    return run


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.get_or_create(
        name=SCHEDULE_NAME,
        defaults={
            "func": TASK,
            "schedule_type": DAILY,
            "repeats": REPEAT_FOREVER,
            "next_run": first_run(timezone.now()),
        },
    )


def delete_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(name=SCHEDULE_NAME, func=TASK).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("tiers", "0006_review_warnings_job_locks"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedule, delete_schedule)]
