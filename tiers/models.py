"""The tier ladder, the rules that reach each tier, and the history of changes."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from simple_history.models import HistoricalRecords


class Tier(models.Model):
    """A rung of the ladder. Its identity outlives rule versions: Gold stays Gold."""

    name = models.CharField(_("name"), max_length=60, unique=True)
    rank = models.PositiveSmallIntegerField(
        _("rank"),
        unique=True,
        help_text=_("Higher is better. A version's lowest tier is its base tier."),
    )
    colour = models.CharField(
        _("colour"),
        max_length=7,
        default="#8a8a8a",
        validators=[
            RegexValidator(r"^#[0-9a-fA-F]{6}$", _("Use a colour like #c9a227."))
        ],
    )
    description = models.TextField(_("description"), blank=True)
    override_needs_approval = models.BooleanField(
        _("overrides need approval"),
        default=False,
        help_text=_("Overrides up to this tier or a higher one need a second approver"),
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["rank"]
        verbose_name = _("tier")
        verbose_name_plural = _("tiers")

    def __str__(self) -> str:
        return self.name


class PublishedVersionError(Exception):
    """Raised when code tries to change the rules of a version that is not a draft."""


class RuleVersionQuerySet(models.QuerySet["RuleVersion"]):
    def in_effect(self, moment: dt.datetime) -> RuleVersion | None:
        """Return the published version in effect at ``moment``, if any."""
        return (
            self.filter(status=RuleVersion.Status.PUBLISHED, effective_from__lte=moment)
            .order_by("-effective_from", "-number")
            .first()
        )


class RuleVersion(models.Model):
    """One edition of the rules: requirements, combinations, growth weights.

    Staff edit drafts. Publishing freezes a version and makes it take effect
    at ``effective_from``; the version in effect at a moment is the published
    one with the latest ``effective_from`` not after it.
    """

    class Status(models.TextChoices):
        DRAFT = "draft", _("Draft")
        PUBLISHED = "published", _("Published")

    class Policy(models.TextChoices):
        REEVALUATE = "reevaluate", _("Re-evaluate every member now")
        NEW_ACTIVITY = "new_activity", _("Apply only from new activity on")
        GRANDFATHER = (
            "grandfather",
            _("Keep current tiers until each member's next review"),
        )

    number = models.PositiveIntegerField(_("number"), unique=True, editable=False)
    status = models.CharField(
        _("status"), max_length=16, choices=Status, default=Status.DRAFT, editable=False
    )
    based_on = models.ForeignKey(
        "self",
        verbose_name=_("copied from"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )
    note = models.TextField(_("what changes"), blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )
    published_at = models.DateTimeField(_("published at"), null=True, editable=False)
    effective_from = models.DateTimeField(
        _("effective from"), null=True, editable=False
    )
    publish_reason = models.TextField(
        _("reason for publishing"), blank=True, editable=False
    )
    policy = models.CharField(
        _("publish policy"), max_length=16, choices=Policy, blank=True, editable=False
    )
    history = HistoricalRecords()

    objects = RuleVersionQuerySet.as_manager()

    class Meta:
        ordering = ["-number"]
        verbose_name = _("rule version")
        verbose_name_plural = _("rule versions")
        permissions = [("publish_ruleversion", _("Can publish rule versions"))]
        constraints = [
            models.CheckConstraint(
                condition=Q(status="draft")
                | (Q(published_at__isnull=False) & Q(effective_from__isnull=False)),
                name="published_version_has_dates",
            ),
        ]

    def __str__(self) -> str:
        return _("Version %(number)d (%(status)s)") % {
            "number": self.number,
            "status": self.get_status_display(),
        }

    def save(self, *args: Any, **kwargs: Any) -> None:
        # A published version is frozen: only tiers.publishing.publish() may
        # save the draft-to-published change, and nothing may save after it.
        if self.pk is not None:
            stored = (
                RuleVersion.objects.filter(pk=self.pk)
                .values_list("status", flat=True)
                .first()
            )
            if stored == self.Status.PUBLISHED:
                raise PublishedVersionError(
                    f"Rule version {self.number} is published and cannot change; "
                    "copy it to a new draft instead."
                )
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        if self.status == self.Status.PUBLISHED:
            raise PublishedVersionError(
                f"Rule version {self.number} is published and cannot be deleted."
            )
        return super().delete(*args, **kwargs)

    @property
    def is_draft(self) -> bool:
        return self.status == self.Status.DRAFT


class DraftOnlyModel(models.Model):
    """A part of a rule version, editable only while the version is a draft."""

    class Meta:
        abstract = True

    def save(self, *args: Any, **kwargs: Any) -> None:
        self._check_draft()
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> Any:
        self._check_draft()
        return super().delete(*args, **kwargs)

    def rule_version_id(self) -> int | None:
        raise NotImplementedError

    def _check_draft(self) -> None:
        # Check the version the row is in now and the one it moves to, so a
        # part cannot be moved out of a published version either.
        if self.pk is not None:
            # Every concrete subclass has a version foreign key.
            manager: Any = type(self)._default_manager
            stored = (
                manager.filter(pk=self.pk).values_list("version_id", flat=True).first()
            )
            if stored is not None and stored != self.rule_version_id():
                self._check_version(stored)
        version_id = self.rule_version_id()
        if version_id is None:
            return
        self._check_version(version_id)

    def _check_version(self, version_id: int) -> None:
        status = (
            RuleVersion.objects.filter(pk=version_id)
            .values_list("status", flat=True)
            .first()
        )
        if status is not None and status != RuleVersion.Status.DRAFT:
            raise PublishedVersionError(
                f"Rule version id={version_id} is published and cannot change; "
                "copy it to a new draft instead."
            )


class RuleGroup(DraftOnlyModel):
    """A node of a rule tree: all, any, or at least N of its requirements and subgroups."""

    class Operator(models.TextChoices):
        ALL = "all", _("all of")
        ANY = "any", _("any of")
        AT_LEAST = "at_least", _("at least N of")

    version = models.ForeignKey(
        RuleVersion, on_delete=models.CASCADE, related_name="groups", editable=False
    )
    parent = models.ForeignKey(
        "self",
        verbose_name=_("inside group"),
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="children",
    )
    label = models.CharField(
        _("label"),
        max_length=80,
        blank=True,
        help_text=_(
            "A name staff recognise, e.g. 'Gold entry' or 'Gold: spend route'."
        ),
    )
    operator = models.CharField(
        _("combine"), max_length=10, choices=Operator, default=Operator.ALL
    )
    at_least = models.PositiveSmallIntegerField(
        _("N"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100)],
        help_text=_("For 'at least N of': how many items must hold."),
    )
    position = models.PositiveSmallIntegerField(_("position"), default=0)
    history = HistoricalRecords()

    class Meta:
        ordering = ["position", "pk"]
        verbose_name = _("rule group")
        verbose_name_plural = _("rule groups")
        constraints = [
            models.CheckConstraint(
                condition=(Q(operator="at_least") & Q(at_least__gte=1))
                | (~Q(operator="at_least") & Q(at_least__isnull=True)),
                name="rulegroup_at_least_only_for_at_least",
            ),
        ]

    def __str__(self) -> str:
        if self.operator == self.Operator.AT_LEAST:
            combine = _("at least %(n)d of") % {"n": self.at_least or 0}
        else:
            combine = str(self.get_operator_display())
        return f"{self.label or f'#{self.pk}'} ({combine})"

    def rule_version_id(self) -> int | None:
        return self.version_id

    def clean(self) -> None:
        if self.operator == self.Operator.AT_LEAST and not self.at_least:
            raise ValidationError({"at_least": _("Enter N for 'at least N of'.")})
        if self.operator != self.Operator.AT_LEAST:
            self.at_least = None
        if self.parent_id and self.parent and self.parent.version_id != self.version_id:
            raise ValidationError(
                {"parent": _("The group belongs to another version.")}
            )


class Validity(models.TextChoices):
    CONTINUOUS = "continuous", _("No review: re-checked at every evaluation")
    MONTHS = "months", _("N months from reaching it")
    CALENDAR_YEAR = "calendar_year", _("To the end of the calendar year")


class Downgrade(models.TextChoices):
    ONE_STEP = "one_step", _("Drop one tier")
    TO_QUALIFIED = "to_qualified", _("Drop to the tier still qualified for")
    TO_BASE = "to_base", _("Drop to the base tier")


class TierRule(DraftOnlyModel):
    """A tier's rules in one version: what enters it, what keeps it at review,
    how long a hold lasts and what a failed review does."""

    version = models.ForeignKey(
        RuleVersion, on_delete=models.CASCADE, related_name="tier_rules"
    )
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="rules")
    entry = models.OneToOneField(
        RuleGroup,
        verbose_name=_("entry requirements"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="entry_of",
        help_text=_("Empty for the base tier, which every member holds."),
    )
    retention = models.OneToOneField(
        RuleGroup,
        verbose_name=_("retention requirements (保级)"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="retention_of",
        help_text=_(
            "What keeps the tier at review; empty means the entry requirements."
        ),
    )
    validity = models.CharField(
        _("validity"),
        max_length=16,
        choices=Validity,
        default=Validity.CONTINUOUS,
        help_text=_(
            "When a member's hold on the tier is reviewed. Between reviews a "
            "member only moves up."
        ),
    )
    validity_months = models.PositiveSmallIntegerField(
        _("months"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_("For 'N months from reaching it': the N."),
    )
    downgrade = models.CharField(
        _("at a failed review"),
        max_length=16,
        choices=Downgrade,
        default=Downgrade.TO_QUALIFIED,
    )
    grace_days = models.PositiveSmallIntegerField(
        _("grace days"),
        default=0,
        help_text=_("Days after a failed review before the drop, to catch up."),
    )
    demote_between_reviews = models.BooleanField(
        _("drop between reviews"),
        default=False,
        help_text=_(
            "Drop at once when refunds or expiring activity break the retention "
            "rules, instead of waiting for the review."
        ),
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["version", "tier__rank"]
        verbose_name = _("tier rule")
        verbose_name_plural = _("tier rules")
        constraints = [
            models.UniqueConstraint(
                fields=["version", "tier"], name="tierrule_unique_tier"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tier} · v{self.version.number}"

    def clean(self) -> None:
        if self.validity == Validity.MONTHS and not self.validity_months:
            raise ValidationError(
                {
                    "validity_months": _(
                        "Enter how many months a hold on the tier lasts."
                    )
                }
            )
        if self.validity != Validity.MONTHS:
            self.validity_months = None

    def rule_version_id(self) -> int | None:
        return self.version_id


class Metric(models.TextChoices):
    NET_SPEND = "net_spend", _("net spend")
    ORDERS = "orders", _("orders")
    ACTIVE_DAYS = "active_days", _("active days")
    VISITS = "visits", _("visits")
    REVIEWS = "reviews", _("reviews")
    REFERRALS = "referrals", _("referrals")
    GROWTH_VALUE = "growth_value", _("growth value")


MONEY_METRICS = frozenset({Metric.NET_SPEND})


# Ten years: longer windows outgrow any ledger and overflow date arithmetic.
MAX_WINDOW_DAYS = 3660


class Window(models.TextChoices):
    ROLLING_DAYS = "rolling_days", _("last N days")
    YEAR_TO_DATE = "year_to_date", _("calendar year to date")
    LIFETIME = "lifetime", _("lifetime")


class Requirement(DraftOnlyModel):
    """One condition on a metric over a window: reached when value >= threshold."""

    version = models.ForeignKey(
        RuleVersion,
        on_delete=models.CASCADE,
        related_name="requirements",
        editable=False,
        help_text=_(
            "Copied from the group, so a version's requirements list in one place."
        ),
    )
    group = models.ForeignKey(
        RuleGroup,
        verbose_name=_("group"),
        on_delete=models.CASCADE,
        related_name="requirements",
    )
    metric = models.CharField(_("metric"), max_length=20, choices=Metric)
    window = models.CharField(
        _("window"), max_length=20, choices=Window, default=Window.ROLLING_DAYS
    )
    window_days = models.PositiveIntegerField(
        _("days"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_WINDOW_DAYS)],
        help_text=_("Length of a 'last N days' window, counting today."),
    )
    threshold = models.DecimalField(
        _("threshold"),
        max_digits=14,
        decimal_places=2,
        validators=[MinValueValidator(Decimal("0"))],
        help_text=_("Reached when the value is at least this (inclusive)."),
    )

    position = models.PositiveSmallIntegerField(_("position"), default=0)
    history = HistoricalRecords()

    class Meta:
        ordering = ["position", "pk"]
        verbose_name = _("requirement")
        verbose_name_plural = _("requirements")
        constraints = [
            models.CheckConstraint(
                condition=(Q(window="rolling_days", window_days__gte=1))
                | (~Q(window="rolling_days") & Q(window_days__isnull=True)),
                name="requirement_days_only_for_rolling_window",
            ),
            models.CheckConstraint(
                condition=Q(window_days__isnull=True) | Q(window_days__lte=3660),
                name="requirement_window_at_most_ten_years",
            ),
            models.CheckConstraint(
                condition=Q(threshold__gte=0), name="requirement_threshold_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_metric_display()} >= {self.threshold}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.group_id is not None:
            group_version = (
                RuleGroup.objects.filter(pk=self.group_id)
                .values_list("version_id", flat=True)
                .first()
            )
            if self.version_id is not None and group_version != self.version_id:
                raise ValidationError(
                    {"group": _("Pick a group of the same rule version.")}
                )
            self.version_id = group_version
        super().save(*args, **kwargs)

    def rule_version_id(self) -> int | None:
        return self.version_id

    def clean(self) -> None:
        if self.window == Window.ROLLING_DAYS and not self.window_days:
            raise ValidationError(
                {
                    "window_days": _(
                        "Enter the number of days for a 'last N days' window."
                    )
                }
            )
        if self.window != Window.ROLLING_DAYS and self.window_days:
            raise ValidationError(
                {
                    "window_days": _(
                        "Leave days empty unless the window is 'last N days'."
                    )
                }
            )
        if (
            self.metric not in MONEY_METRICS
            and self.metric != Metric.GROWTH_VALUE
            and self.threshold is not None
            and self.threshold != self.threshold.to_integral_value()
        ):
            raise ValidationError(
                {
                    "threshold": _("%(metric)s is a count; enter a whole number.")
                    % {"metric": self.get_metric_display()}
                }
            )


class GrowthWeight(DraftOnlyModel):
    """Points of growth value (成长值) that one activity kind earns in a version.

    A weight with a channel applies to that channel only and takes precedence
    over the kind's channel-less weight.
    """

    version = models.ForeignKey(
        RuleVersion,
        on_delete=models.CASCADE,
        related_name="weights",
        editable=False,
    )
    kind = models.ForeignKey(
        "members.ActivityKind",
        verbose_name=_("activity kind"),
        on_delete=models.CASCADE,
        related_name="+",
    )
    channel = models.ForeignKey(
        "members.Channel",
        verbose_name=_("channel"),
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
        help_text=_("Empty: every channel without its own weight for this kind."),
    )
    points_per_event = models.DecimalField(
        _("points per event"), max_digits=10, decimal_places=2, default=Decimal("0")
    )
    points_per_unit = models.DecimalField(
        _("points per currency unit"),
        max_digits=10,
        decimal_places=4,
        default=Decimal("0"),
        help_text=_("Multiplied by the amount; refunds are negative, so they deduct."),
    )
    daily_cap = models.DecimalField(
        _("cap per day"),
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text=_(
            "Most points this weight gives a member in one day (program time zone)."
        ),
    )
    window_cap = models.DecimalField(
        _("cap per window"),
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0"))],
        help_text=_(
            "Most points this weight gives a member within a requirement's window."
        ),
    )
    history = HistoricalRecords()

    class Meta:
        verbose_name = _("growth value weight")
        verbose_name_plural = _("growth value weights")
        constraints = [
            models.UniqueConstraint(
                fields=["version", "kind"],
                condition=Q(channel__isnull=True),
                name="growthweight_unique_kind",
            ),
            models.UniqueConstraint(
                fields=["version", "kind", "channel"],
                condition=Q(channel__isnull=False),
                name="growthweight_unique_kind_channel",
            ),
        ]

    def __str__(self) -> str:
        if self.channel_id:
            return f"{self.kind} @ {self.channel}"
        return str(self.kind)

    def rule_version_id(self) -> int | None:
        return self.version_id


class TierChange(models.Model):
    """A change of a member's tier, with the evaluation that decided it."""

    class Reason(models.TextChoices):
        INITIAL = "initial", _("First evaluation")
        PROMOTION = "promotion", _("Promotion")
        DEMOTION = "demotion", _("Demotion")
        RENEWAL = "renewal", _("Kept at review")
        GRACE = "grace", _("Review failed, grace period started")
        OVERRIDE = "override", _("Manual override")
        OPENING = "opening", _("Opening tier from an earlier program")
        MERGE = "merge", _("Member merge")

    member = models.ForeignKey(
        "members.Member", on_delete=models.CASCADE, related_name="tier_changes"
    )
    from_tier = models.ForeignKey(
        Tier, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    to_tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="+")
    version = models.ForeignKey(
        RuleVersion,
        verbose_name=_("rule version"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    changed_at = models.DateTimeField(_("changed at"))
    as_of = models.DateTimeField(
        _("evaluated as of"), help_text=_("The moment the metrics were computed for.")
    )
    reason = models.CharField(_("reason"), max_length=16, choices=Reason)
    review_at = models.DateTimeField(
        _("next review"),
        null=True,
        blank=True,
        help_text=_("When the tier this change set is next reviewed."),
    )
    explanation = models.JSONField(
        _("explanation"),
        help_text=_(
            "Each tier's requirements with value, threshold, window and result."
        ),
    )

    class Meta:
        ordering = ["-changed_at", "-pk"]
        verbose_name = _("tier change")
        verbose_name_plural = _("tier changes")
        indexes = [
            models.Index(fields=["member", "-changed_at"], name="tierchange_member")
        ]

    def __str__(self) -> str:
        return f"{self.from_tier} → {self.to_tier}"


class ReviewWarning(models.Model):
    """A notice that a member's tier is at risk at the coming review.

    tiers.warnings.record_review_warnings() writes one per member and review
    date, so running it again for the same review adds nothing.
    """

    member = models.ForeignKey(
        "members.Member", on_delete=models.CASCADE, related_name="review_warnings"
    )
    tier = models.ForeignKey(
        Tier,
        verbose_name=_("tier at risk"),
        on_delete=models.PROTECT,
        related_name="+",
    )
    review_at = models.DateTimeField(_("review at"))
    as_of = models.DateTimeField(
        _("measured as of"),
        help_text=_("The moment the shortfall was computed for."),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    shortfall = models.JSONField(
        _("shortfall"),
        help_text=_(
            "The retention requirements not met, with metric, window, value and "
            "threshold, grouped as in the tier's rules."
        ),
    )

    class Meta:
        ordering = ["review_at", "pk"]
        verbose_name = _("review warning")
        verbose_name_plural = _("review warnings")
        constraints = [
            models.UniqueConstraint(
                fields=["member", "review_at"], name="reviewwarning_unique_review"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tier} · {self.review_at:%Y-%m-%d}"


class JobLock(models.Model):
    """The lock that keeps a background job to one running instance.

    tiers.jobs.job_lock() takes it with a conditional UPDATE and releases it
    when the job ends. A run that is killed cannot release it, so a lock held
    longer than the job's timeout counts as free.
    """

    name = models.CharField(_("job name"), max_length=100, unique=True)
    running = models.BooleanField(_("running"), default=False)
    locked_at = models.DateTimeField(_("locked at"), null=True, blank=True)
    # Random id of the run that holds the lock. Release matches it, so a run
    # that outlived its timeout cannot free the lock of the run that took over.
    token = models.CharField(_("holder token"), max_length=32, blank=True)

    class Meta:
        verbose_name = _("job lock")
        verbose_name_plural = _("job locks")

    def __str__(self) -> str:
        return self.name


class TierOverride(models.Model):
    """A tier set by hand for one member, with who requested, approved and why.

    tiers.overrides creates and changes these; tiers.evaluation applies the
    active fixed and floor overrides each time it decides a member's tier.
    """

    class Mode(models.TextChoices):
        FIXED = "fixed", _("Fixed until a date")
        FLOOR = "floor", _("Floor: never below the tier")
        ONE_OFF = "one_off", _("One-off: set now, the rules decide later")

    class Status(models.TextChoices):
        PENDING = "pending", _("Waiting for approval")
        ACTIVE = "active", _("Active")
        REJECTED = "rejected", _("Rejected")
        ENDED = "ended", _("Ended")

    class EndReason(models.TextChoices):
        APPLIED_ONCE = "applied_once", _("One-off applied")
        REPLACED = "replaced", _("Replaced by a newer override")
        EXPIRED = "expired", _("End date passed")

    member = models.ForeignKey(
        "members.Member",
        verbose_name=_("member"),
        on_delete=models.CASCADE,
        related_name="tier_overrides",
    )
    tier = models.ForeignKey(
        Tier, verbose_name=_("tier"), on_delete=models.PROTECT, related_name="+"
    )
    mode = models.CharField(_("mode"), max_length=16, choices=Mode)
    until = models.DateTimeField(
        _("until"),
        null=True,
        blank=True,
        help_text=_(
            "When the override stops applying. Required for a fixed override, "
            "optional for a floor, ignored for a one-off."
        ),
    )
    reason = models.TextField(_("reason"))
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("requested by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )
    requested_at = models.DateTimeField(_("requested at"), editable=False)
    approved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("approved by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )
    approved_at = models.DateTimeField(
        _("approved at"), null=True, blank=True, editable=False
    )
    rejected_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("rejected by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
    )
    rejected_at = models.DateTimeField(
        _("rejected at"), null=True, blank=True, editable=False
    )
    rejection_reason = models.TextField(
        _("reason for rejecting"), blank=True, editable=False
    )
    status = models.CharField(
        _("status"),
        max_length=16,
        choices=Status,
        default=Status.PENDING,
        editable=False,
    )
    ended_at = models.DateTimeField(
        _("ended at"),
        null=True,
        blank=True,
        editable=False,
        help_text=_("For an override whose end date passed, that end date."),
    )
    ended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("ended by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        editable=False,
        related_name="+",
        help_text=_("Empty when the end date passed."),
    )
    end_reason = models.CharField(
        _("why it ended"),
        max_length=16,
        choices=EndReason,
        blank=True,
        editable=False,
    )
    history = HistoricalRecords()

    class Meta:
        ordering = ["-requested_at", "-pk"]
        verbose_name = _("tier override")
        verbose_name_plural = _("tier overrides")
        permissions = [
            ("approve_tieroverride", _("Can approve or reject tier overrides")),
        ]
        indexes = [
            models.Index(fields=["member", "status"], name="tieroverride_member"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(mode="fixed") | Q(until__isnull=False),
                name="tieroverride_fixed_has_until",
            ),
            # Applying an override ends the member's other active one, so
            # evaluation never has to choose between two.
            models.UniqueConstraint(
                fields=["member"],
                condition=Q(status="active"),
                name="tieroverride_one_active_per_member",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tier} · {self.get_mode_display()}"

    def summary(self) -> dict[str, Any]:
        """Return who set the override and why, for TierChange explanations."""
        requested_by = self.requested_by
        approved_by = self.approved_by
        return {
            "id": self.pk,
            "mode": self.mode,
            "tier": self.tier_id,
            "until": self.until.isoformat() if self.until else None,
            "reason": self.reason,
            "requested_by": requested_by.get_username() if requested_by else None,
            "approved_by": approved_by.get_username() if approved_by else None,
        }

    def clean(self) -> None:
        if self.mode == self.Mode.FIXED and self.until is None:
            raise ValidationError({"until": _("Enter the date a fixed override ends.")})


class TierSnapshot(models.Model):
    """How many members held a tier at the end of a day, for charts over time."""

    day = models.DateField(_("day"), db_index=True)
    tier = models.ForeignKey(
        Tier, verbose_name=_("tier"), on_delete=models.CASCADE, related_name="+"
    )
    members = models.PositiveIntegerField(_("members"))

    class Meta:
        ordering = ["day", "tier__rank"]
        verbose_name = _("tier snapshot")
        verbose_name_plural = _("tier snapshots")
        constraints = [
            models.UniqueConstraint(
                fields=["day", "tier"], name="tiersnapshot_unique_day_tier"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.tier_id}: {self.members}"


class MemberOutlook(models.Model):
    """A member's distance to the next tier and to the coming review, as of
    ``computed_at``, with the pace projection. Refreshed by a background job
    so that the work queues are plain indexed lists."""

    member = models.OneToOneField(
        "members.Member",
        verbose_name=_("member"),
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="outlook",
    )
    tier = models.ForeignKey(
        Tier,
        verbose_name=_("tier"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    next_tier = models.ForeignKey(
        Tier,
        verbose_name=_("next tier"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    progress = models.PositiveSmallIntegerField(
        _("progress to next tier (%)"), default=0
    )
    projected_on = models.DateField(
        _("next tier at this pace"),
        null=True,
        blank=True,
        help_text=_("When the member reaches the next tier if the pace holds."),
    )
    review_at = models.DateTimeField(_("next review"), null=True, blank=True)
    at_risk = models.BooleanField(
        _("at risk"),
        default=False,
        help_text=_("Would drop if the review ran with the pace so far."),
    )
    retention_progress = models.PositiveSmallIntegerField(
        _("progress to keep the tier (%)"), null=True, blank=True
    )
    explanation = models.JSONField(
        _("explanation"),
        encoder=DjangoJSONEncoder,
        default=dict,
        blank=True,
        help_text=_("The values, thresholds and paces the figures come from."),
    )
    computed_at = models.DateTimeField(_("computed at"))

    class Meta:
        verbose_name = _("member outlook")
        verbose_name_plural = _("member outlooks")
        indexes = [
            models.Index(
                fields=["next_tier", "-progress"], name="outlook_near_promotion"
            ),
            models.Index(fields=["at_risk", "review_at"], name="outlook_at_risk"),
            # The two work queues, in the order they list members. An
            # ascending PostgreSQL index puts empty dates last by default.
            models.Index(
                "projected_on",
                models.F("progress").desc(),
                "member",
                condition=Q(next_tier__isnull=False, progress__lt=100),
                name="outlook_near_queue",
            ),
            models.Index(
                "review_at",
                "retention_progress",
                "member",
                condition=Q(at_risk=True),
                name="outlook_risk_queue",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.member_id}: {self.progress}%"


class ReviewExtension(models.Model):
    """Staff moved a member's review later, giving more time to keep the tier."""

    member = models.ForeignKey(
        "members.Member",
        verbose_name=_("member"),
        on_delete=models.CASCADE,
        related_name="review_extensions",
    )
    tier = models.ForeignKey(
        Tier, verbose_name=_("tier"), on_delete=models.PROTECT, related_name="+"
    )
    previous_review_at = models.DateTimeField(_("review before"))
    review_at = models.DateTimeField(_("review after"))
    reason = models.TextField(_("reason"))
    extended_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("extended by"),
        on_delete=models.PROTECT,
        related_name="+",
    )
    extended_at = models.DateTimeField(_("extended at"), auto_now_add=True)

    class Meta:
        ordering = ["-extended_at", "-pk"]
        verbose_name = _("review extension")
        verbose_name_plural = _("review extensions")

    def __str__(self) -> str:
        return f"{self.member_id}: {self.review_at:%Y-%m-%d}"
