"""Schedule the outbox sender every minute and the tier change messages
every ten minutes.

Both tasks are also queued after the commits that create work for them.
The schedules pick up what a lost queue entry or a crash left behind, and
the review warnings that the nightly reviews record. An existing schedule
of the same name is left as it is.
"""

from django.db import migrations
from django.utils import timezone

# (schedule name, task, minutes between runs)
SCHEDULES = [
    ("send-notifications", "members.jobs.send_due_messages", 1),
    (
        "tier-change-messages",
        "members.notifications.queue_tier_change_messages",
        10,
    ),
]
# django_q.models.Schedule.MINUTES and the "repeat forever" value of repeats.
# Historical models in migrations do not carry class constants.
MINUTES = "I"
REPEAT_FOREVER = -1


def create_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, task, minutes in SCHEDULES:
        Schedule.objects.get_or_create(
            name=name,
            defaults={
                "func": task,
                "schedule_type": MINUTES,
                "minutes": minutes,
                "repeats": REPEAT_FOREVER,
                "next_run": timezone.now(),
            },
        )


def delete_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, task, _minutes in SCHEDULES:
        Schedule.objects.filter(name=name, func=task).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("members", "0005_notification_outbox"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(create_schedules, delete_schedules)]
