import django.db.models.deletion
from django.db import migrations, models


def copy_group_versions(apps, schema_editor):
    Requirement = apps.get_model("tiers", "Requirement")
    RuleGroup = apps.get_model("tiers", "RuleGroup")
    for group_id, version_id in RuleGroup.objects.values_list("pk", "version_id"):
        Requirement.objects.filter(group_id=group_id).update(version_id=version_id)


class Migration(migrations.Migration):
    dependencies = [("tiers", "0002_rule_versions")]

    operations = [
        migrations.AddField(
            model_name="rulegroup",
            name="label",
            field=models.CharField(
                blank=True,
                help_text="A name staff recognise, e.g. 'Gold entry' or 'Gold: spend route'.",
                max_length=80,
                verbose_name="label",
            ),
        ),
        migrations.AddField(
            model_name="historicalrulegroup",
            name="label",
            field=models.CharField(
                blank=True,
                help_text="A name staff recognise, e.g. 'Gold entry' or 'Gold: spend route'.",
                max_length=80,
                verbose_name="label",
            ),
        ),
        migrations.AddField(
            model_name="requirement",
            name="version",
            field=models.ForeignKey(
                editable=False,
                null=True,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="requirements",
                to="tiers.ruleversion",
            ),
        ),
        migrations.RunPython(copy_group_versions, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="requirement",
            name="version",
            field=models.ForeignKey(
                editable=False,
                help_text="Copied from the group, so a version's requirements list in one place.",
                on_delete=django.db.models.deletion.CASCADE,
                related_name="requirements",
                to="tiers.ruleversion",
            ),
        ),
        migrations.AddField(
            model_name="historicalrequirement",
            name="version",
            field=models.ForeignKey(
                blank=True,
                db_constraint=False,
                editable=False,
                help_text="Copied from the group, so a version's requirements list in one place.",
                null=True,
                on_delete=django.db.models.deletion.DO_NOTHING,
                related_name="+",
                to="tiers.ruleversion",
            ),
        ),
    ]
