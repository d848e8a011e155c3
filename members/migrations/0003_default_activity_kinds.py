from django.db import migrations

DEFAULT_KINDS = [
    ("purchase", "Purchase", "purchase"),
    ("refund", "Refund", "refund"),
    ("visit", "Visit", "visit"),
    ("review", "Review", "review"),
    ("referral", "Referral", "referral"),
]


def add_default_kinds(apps, schema_editor):
    ActivityKind = apps.get_model("members", "ActivityKind")
    for code, name, role in DEFAULT_KINDS:
        ActivityKind.objects.get_or_create(code=code, defaults={"name": name, "role": role})


class Migration(migrations.Migration):
    dependencies = [("members", "0002_initial")]

    operations = [migrations.RunPython(add_default_kinds, migrations.RunPython.noop)]
