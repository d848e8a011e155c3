"""Add tier benefits, pools, tier periods and grants; link tiers through TierBenefit."""

import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def copy_tier_links(apps, schema_editor):
    """Copy each old benefit-tier link to a TierBenefit given while in the tier.

    Before this migration a benefit linked to a tier was enjoyed by every
    member in the tier, which is what an ongoing TierBenefit means.
    """
    Benefit = apps.get_model("benefits", "Benefit")
    TierBenefit = apps.get_model("benefits", "TierBenefit")
    links = Benefit.tiers.through.objects.values_list("benefit_id", "tier_id")
    TierBenefit.objects.bulk_create(
        TierBenefit(benefit_id=benefit_id, tier_id=tier_id, mode="ongoing")
        for benefit_id, tier_id in links
    )


def copy_tier_links_back(apps, schema_editor):
    Benefit = apps.get_model("benefits", "Benefit")
    TierBenefit = apps.get_model("benefits", "TierBenefit")
    links = TierBenefit.objects.values_list("benefit_id", "tier_id")
    Benefit.tiers.through.objects.bulk_create(
        Benefit.tiers.through(benefit_id=benefit_id, tier_id=tier_id)
        for benefit_id, tier_id in links
    )


class Migration(migrations.Migration):

    dependencies = [
        ('benefits', '0002_initial'),
        ('members', '0004_tier_reviews'),
        ('tiers', '0009_tier_overrides'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='ProcessedTierChange',
            fields=[
                ('change', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='benefit_processing', serialize=False, to='tiers.tierchange', verbose_name='tier change')),
                ('processed_at', models.DateTimeField(verbose_name='processed at')),
                ('outcome', models.CharField(choices=[('handled', 'Handled'), ('before_issuing', 'Recorded before benefit issuing existed')], default='handled', max_length=16, verbose_name='outcome')),
                ('grants_created', models.PositiveIntegerField(default=0, verbose_name='grants created')),
            ],
            options={
                'verbose_name': 'processed tier change',
                'verbose_name_plural': 'processed tier changes',
            },
        ),
        migrations.CreateModel(
            name='TierPeriod',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('starts_at', models.DateTimeField(verbose_name='starts at')),
                ('ends_at', models.DateTimeField(verbose_name='ends at')),
            ],
            options={
                'verbose_name': 'tier period',
                'verbose_name_plural': 'tier periods',
                'ordering': ['member', 'tier', 'ends_at'],
            },
        ),
        migrations.AddField(
            model_name='benefit',
            name='approval_days',
            field=models.PositiveSmallIntegerField(default=3, help_text='Days staff have to approve or reject a grant. A grant still undecided after that is approved automatically.', validators=[django.core.validators.MinValueValidator(1)], verbose_name='approval deadline (days)'),
        ),
        migrations.AddField(
            model_name='benefit',
            name='approval_required',
            field=models.BooleanField(default=False, help_text='Grants wait in the approval queue until staff approve them.', verbose_name='needs approval'),
        ),
        migrations.AddField(
            model_name='benefit',
            name='stock',
            field=models.PositiveIntegerField(blank=True, help_text='Items left to issue; each grant takes one. Empty means unlimited. Grants issued while the stock is 0 wait until it is raised.', null=True, verbose_name='stock'),
        ),
        migrations.AddField(
            model_name='benefit',
            name='valid_days',
            field=models.PositiveIntegerField(blank=True, help_text='Each grant expires this many days after it is issued.', null=True, validators=[django.core.validators.MinValueValidator(1)], verbose_name='valid for days'),
        ),
        migrations.AddField(
            model_name='benefit',
            name='valid_from',
            field=models.DateTimeField(blank=True, help_text='Codes cannot be redeemed before this moment. Empty: at once.', null=True, verbose_name='valid from'),
        ),
        migrations.AddField(
            model_name='benefit',
            name='valid_until',
            field=models.DateTimeField(blank=True, help_text='Every grant expires at this moment at the latest, and nothing is issued after it. Empty: no fixed end.', null=True, verbose_name='valid until'),
        ),
        migrations.AddField(
            model_name='benefit',
            name='value',
            field=models.DecimalField(blank=True, decimal_places=2, help_text='Points credited, percent off or money off, as the kind implies. Empty when the benefit has no amount.', max_digits=12, null=True, verbose_name='value'),
        ),
        migrations.CreateModel(
            name='BenefitPool',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('name', models.CharField(max_length=120, verbose_name='name')),
                ('choose', models.PositiveSmallIntegerField(default=1, help_text='How many options a member picks in each period of the tier.', validators=[django.core.validators.MinValueValidator(1)], verbose_name='choices per period')),
                ('options', models.ManyToManyField(related_name='pools', to='benefits.benefit', verbose_name='options')),
                ('tier', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='benefit_pools', to='tiers.tier', verbose_name='tier')),
            ],
            options={
                'verbose_name': 'benefit pool',
                'verbose_name_plural': 'benefit pools',
                'ordering': ['tier__rank', 'name'],
            },
        ),
        migrations.CreateModel(
            name='Grant',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('origin', models.CharField(choices=[('welcome', 'Welcome benefit'), ('ongoing', 'Ongoing benefit'), ('pool', 'Chosen from a pool')], max_length=16, verbose_name='origin')),
                ('pool_slot', models.PositiveSmallIntegerField(null=True, verbose_name='choice number')),
                ('status', models.CharField(choices=[('awaiting_stock', 'Waiting for stock'), ('awaiting_approval', 'Waiting for approval'), ('issued', 'Issued'), ('redeemed', 'Redeemed'), ('expired', 'Expired'), ('ended', 'Ended: left the tier'), ('rejected', 'Rejected')], max_length=20, verbose_name='status')),
                ('code', models.CharField(max_length=20, unique=True, verbose_name='code')),
                ('stock_taken', models.BooleanField(default=False, verbose_name='holds stock')),
                ('created_at', models.DateTimeField(verbose_name='created at')),
                ('issued_at', models.DateTimeField(blank=True, null=True, verbose_name='issued at')),
                ('expires_at', models.DateTimeField(blank=True, null=True, verbose_name='expires at')),
                ('approval_due_at', models.DateTimeField(blank=True, help_text='Approved automatically at this moment if still undecided.', null=True, verbose_name='approval deadline')),
                ('decided_at', models.DateTimeField(blank=True, null=True, verbose_name='decided at')),
                ('auto_approved', models.BooleanField(default=False, help_text='Nobody decided before the deadline.', verbose_name='approved automatically')),
                ('rejection_reason', models.TextField(blank=True, verbose_name='reason for rejecting')),
                ('ended_at', models.DateTimeField(blank=True, null=True, verbose_name='ended at')),
                ('redeemed_at', models.DateTimeField(blank=True, null=True, verbose_name='redeemed at')),
                ('redemption_reference', models.CharField(blank=True, help_text="The channel's own id for the redemption, e.g. an order number.", max_length=100, verbose_name='redemption reference')),
                ('expiry_warned_at', models.DateTimeField(blank=True, null=True, verbose_name='expiry warning sent at')),
                ('benefit', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='grants', to='benefits.benefit', verbose_name='benefit')),
                ('decided_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL, verbose_name='decided by')),
                ('member', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='benefit_grants', to='members.member', verbose_name='member')),
                ('pool', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='grants', to='benefits.benefitpool', verbose_name='pool')),
                ('redeemed_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL, verbose_name='redeemed by')),
                ('redeemed_channel', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='members.channel', verbose_name='redeemed in channel')),
                ('tier', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tiers.tier', verbose_name='tier')),
                ('tier_change', models.ForeignKey(blank=True, help_text='The tier change that issued it; empty for pool choices.', null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='tiers.tierchange', verbose_name='tier change')),
            ],
            options={
                'verbose_name': 'benefit grant',
                'verbose_name_plural': 'benefit grants',
                'ordering': ['-created_at', '-pk'],
                'permissions': [('redeem_grant', 'Can redeem benefit grants'), ('approve_grant', 'Can approve or reject benefit grants')],
            },
        ),
        migrations.CreateModel(
            name='GrantAwaitingApproval',
            fields=[
            ],
            options={
                'verbose_name': 'grant awaiting approval',
                'verbose_name_plural': 'approval queue',
                'proxy': True,
                'indexes': [],
                'constraints': [],
            },
            bases=('benefits.grant',),
        ),
        migrations.CreateModel(
            name='TierBenefit',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('mode', models.CharField(choices=[('welcome', 'Once on reaching the tier'), ('ongoing', 'While in the tier')], default='ongoing', max_length=16, verbose_name='given')),
                ('benefit', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='tier_benefits', to='benefits.benefit', verbose_name='benefit')),
                ('tier', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='tier_benefits', to='tiers.tier', verbose_name='tier')),
            ],
            options={
                'verbose_name': 'tier benefit',
                'verbose_name_plural': 'tier benefits',
                'ordering': ['tier__rank', 'benefit__name'],
            },
        ),
        # Django cannot add a through model to an existing many-to-many field,
        # so the links are copied to TierBenefit and the field is replaced.
        migrations.RunPython(copy_tier_links, copy_tier_links_back),
        migrations.RemoveField(model_name='benefit', name='tiers'),
        migrations.AddField(
            model_name='benefit',
            name='tiers',
            field=models.ManyToManyField(blank=True, related_name='benefits', through='benefits.TierBenefit', to='tiers.tier', verbose_name='tiers'),
        ),
        migrations.AddConstraint(
            model_name='benefit',
            constraint=models.CheckConstraint(condition=models.Q(('stock__isnull', True), ('stock__gte', 0), _connector='OR'), name='benefit_stock_not_negative'),
        ),
        migrations.AddConstraint(
            model_name='benefit',
            constraint=models.CheckConstraint(condition=models.Q(('valid_from__isnull', True), ('valid_until__isnull', True), ('valid_from__lt', models.F('valid_until')), _connector='OR'), name='benefit_valid_from_before_until'),
        ),
        migrations.AddField(
            model_name='tierperiod',
            name='member',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='tier_periods', to='members.member', verbose_name='member'),
        ),
        migrations.AddField(
            model_name='tierperiod',
            name='opened_by',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='tiers.tierchange', verbose_name='opened by'),
        ),
        migrations.AddField(
            model_name='tierperiod',
            name='tier',
            field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='+', to='tiers.tier', verbose_name='tier'),
        ),
        migrations.AddField(
            model_name='processedtierchange',
            name='period',
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to='benefits.tierperiod', verbose_name='period'),
        ),
        migrations.AddField(
            model_name='grant',
            name='period',
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='grants', to='benefits.tierperiod', verbose_name='period'),
        ),
        migrations.AddConstraint(
            model_name='benefitpool',
            constraint=models.CheckConstraint(condition=models.Q(('choose__gte', 1)), name='benefitpool_choose_at_least_one'),
        ),
        migrations.AddConstraint(
            model_name='tierbenefit',
            constraint=models.UniqueConstraint(fields=('tier', 'benefit'), name='tierbenefit_unique_benefit'),
        ),
        migrations.AddConstraint(
            model_name='tierperiod',
            constraint=models.UniqueConstraint(fields=('member', 'tier', 'ends_at'), name='tierperiod_unique_end'),
        ),
        migrations.AddConstraint(
            model_name='tierperiod',
            constraint=models.CheckConstraint(condition=models.Q(('starts_at__lt', models.F('ends_at'))), name='tierperiod_starts_before_end'),
        ),
        migrations.AddIndex(
            model_name='grant',
            index=models.Index(fields=['member', 'status'], name='grant_member_status'),
        ),
        migrations.AddIndex(
            model_name='grant',
            index=models.Index(fields=['status', 'expires_at'], name='grant_status_expiry'),
        ),
        migrations.AddIndex(
            model_name='grant',
            index=models.Index(fields=['status', 'approval_due_at'], name='grant_status_deadline'),
        ),
        migrations.AddConstraint(
            model_name='grant',
            constraint=models.UniqueConstraint(fields=('member', 'benefit', 'period'), name='grant_once_per_period'),
        ),
        migrations.AddConstraint(
            model_name='grant',
            constraint=models.UniqueConstraint(condition=models.Q(('pool__isnull', False)), fields=('period', 'pool', 'pool_slot'), name='grant_unique_pool_slot'),
        ),
        migrations.AddConstraint(
            model_name='grant',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('origin', 'pool'), ('pool__isnull', False), ('pool_slot__gte', 1)), models.Q(models.Q(('origin', 'pool'), _negated=True), ('pool__isnull', True), ('pool_slot__isnull', True)), _connector='OR'), name='grant_pool_fields_match_origin'),
        ),
        migrations.AddConstraint(
            model_name='grant',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('status', 'redeemed'), _negated=True), ('redeemed_at__isnull', False), _connector='OR'), name='grant_redeemed_has_time'),
        ),
        migrations.AddConstraint(
            model_name='grant',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('status', 'awaiting_approval'), _negated=True), ('approval_due_at__isnull', False), _connector='OR'), name='grant_awaiting_approval_has_deadline'),
        ),
        migrations.AddConstraint(
            model_name='grant',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('status__in', ['issued', 'redeemed', 'expired']), _negated=True), ('issued_at__isnull', False), _connector='OR'), name='grant_issued_has_time'),
        ),
    ]
