"""Bound a benefit's valid_days and approval_days to 1..3660 days.

Issuing adds these days to the current time, and a value far above ten
years overflows datetime and fails every grant of the benefit. Existing rows
are brought into range before the check constraints are added:

* valid_days above 3660 becomes empty (no limit in days), because a grant
  of such a benefit never expired in practice. valid_until still applies.
* valid_days 0 becomes empty too, since issuing already read 0 as no limit.
* approval_days is clamped to 1..3660.
"""

import django.core.validators
from django.db import migrations, models

MAX_BENEFIT_DAYS = 3660


def bring_days_into_range(apps, schema_editor):
    Benefit = apps.get_model("benefits", "Benefit")
    Benefit.objects.filter(valid_days__gt=MAX_BENEFIT_DAYS).update(valid_days=None)
    Benefit.objects.filter(valid_days__lt=1).update(valid_days=None)
    Benefit.objects.filter(approval_days__gt=MAX_BENEFIT_DAYS).update(
        approval_days=MAX_BENEFIT_DAYS
    )
    Benefit.objects.filter(approval_days__lt=1).update(approval_days=1)


class Migration(migrations.Migration):
    dependencies = [
        ("benefits", "0004_schedule_benefit_jobs"),
        ("tiers", "0010_tieroverride_rejected_at_and_end"),
    ]

    operations = [
        migrations.RunPython(bring_days_into_range, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="benefit",
            name="approval_days",
            field=models.PositiveSmallIntegerField(
                default=3,
                help_text="Days staff have to approve or reject a grant, from 1 to 3660. A grant still undecided after that is approved automatically.",
                validators=[
                    django.core.validators.MinValueValidator(1),
                    django.core.validators.MaxValueValidator(3660),
                ],
                verbose_name="approval deadline (days)",
            ),
        ),
        migrations.AlterField(
            model_name="benefit",
            name="valid_days",
            field=models.PositiveIntegerField(
                blank=True,
                help_text="Each grant expires this many days after it is issued, at most 3660 (ten years). Empty: no limit in days.",
                null=True,
                validators=[
                    django.core.validators.MinValueValidator(1),
                    django.core.validators.MaxValueValidator(3660),
                ],
                verbose_name="valid for days",
            ),
        ),
        migrations.AddConstraint(
            model_name="benefit",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("valid_days__isnull", True),
                    models.Q(("valid_days__gte", 1), ("valid_days__lte", 3660)),
                    _connector="OR",
                ),
                name="benefit_valid_days_in_range",
            ),
        ),
        migrations.AddConstraint(
            model_name="benefit",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    ("approval_days__gte", 1), ("approval_days__lte", 3660)
                ),
                name="benefit_approval_days_in_range",
            ),
        ),
    ]
