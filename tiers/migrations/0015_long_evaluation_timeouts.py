"""Give the nightly jobs that evaluate every member a timeout of their own.

django-q2 stops a task after the cluster's ``timeout`` (600 s by default),
too short for the nightly reviews and the outlook refresh of a large
program. The schedules now pass ``CRM_EVALUATION_TASK_TIMEOUT``, read when
this migration runs, as the task's own timeout.
"""

from django.conf import settings
from django.db import migrations

SCHEDULES = [
    ("nightly-reviews", "tiers.jobs.run_nightly_reviews"),
    ("member-outlooks", "tiers.outlook.refresh_outlooks"),
]


def set_timeouts(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    options = {"q_options": {"timeout": int(settings.CRM_EVALUATION_TASK_TIMEOUT)}}
    for name, task in SCHEDULES:
        Schedule.objects.filter(name=name, func=task).update(kwargs=repr(options))


def clear_timeouts(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, task in SCHEDULES:
        Schedule.objects.filter(name=name, func=task).update(kwargs=None)


class Migration(migrations.Migration):
    dependencies = [
        ("tiers", "0014_work_queue_indexes"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [migrations.RunPython(set_timeouts, clear_timeouts)]
