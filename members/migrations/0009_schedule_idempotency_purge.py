"""Schedule the daily deletion of old idempotency records.

An existing schedule of the same name is left as it is.
"""

from django.db import migrations
from django.utils import timezone

NAME = "purge-idempotency-records"
TASK = "members.retention.purge_idempotency_records"
# django_q.models.Schedule.DAILY and the "repeat forever" value of repeats.
# Historical models in migrations do not carry class constants.
DAILY = "D"
REPEAT_FOREVER = -1


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.get_or_create(
        name=NAME,
        defaults={
            "func": TASK,
            "schedule_type": DAILY,
            "repeats": REPEAT_FOREVER,
            "next_run": timezone.now(),
        },
    )


def delete_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.filter(name=NAME, func=TASK).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("members", "0008_import_batches_merges_openings"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedule, delete_schedule)]
