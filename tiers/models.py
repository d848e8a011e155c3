"""The tier ladder, the rules that reach each tier, and the history of changes."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class Tier(models.Model):
    """A rung of the ladder. The tier with the lowest rank is the base tier."""

    class Combine(models.TextChoices):
        ALL = "all", _("All requirements")
        ANY = "any", _("Any requirement")

    name = models.CharField(_("name"), max_length=60, unique=True)
    rank = models.PositiveSmallIntegerField(
        _("rank"),
        unique=True,
        help_text=_(
            "Higher is better. The lowest rank is the base tier every member has."
        ),
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
    combine = models.CharField(
        _("reached when"),
        max_length=3,
        choices=Combine,
        default=Combine.ALL,
        help_text=_("Whether every requirement must hold, or at least one."),
    )

    class Meta:
        ordering = ["rank"]
        verbose_name = _("tier")
        verbose_name_plural = _("tiers")

    def __str__(self) -> str:
        return self.name


class Metric(models.TextChoices):
    NET_SPEND = "net_spend", _("net spend")
    ORDERS = "orders", _("orders")
    ACTIVE_DAYS = "active_days", _("active days")
    VISITS = "visits", _("visits")
    REVIEWS = "reviews", _("reviews")
    REFERRALS = "referrals", _("referrals")
    GROWTH_VALUE = "growth_value", _("growth value")


MONEY_METRICS = frozenset({Metric.NET_SPEND})


class Window(models.TextChoices):
    ROLLING_DAYS = "rolling_days", _("last N days")
    YEAR_TO_DATE = "year_to_date", _("calendar year to date")
    LIFETIME = "lifetime", _("lifetime")


class Requirement(models.Model):
    """One condition on a metric over a window: reached when value >= threshold."""

    tier = models.ForeignKey(
        Tier, on_delete=models.CASCADE, related_name="requirements"
    )
    metric = models.CharField(_("metric"), max_length=20, choices=Metric)
    window = models.CharField(
        _("window"), max_length=20, choices=Window, default=Window.ROLLING_DAYS
    )
    window_days = models.PositiveIntegerField(
        _("days"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=_("Length of a 'last N days' window, counting today."),
    )
    threshold = models.DecimalField(
        _("threshold"),
        max_digits=14,
        decimal_places=2,
        validators=[MinValueValidator(Decimal("0"))],
        help_text=_("Reached when the value is at least this (inclusive)."),
    )

    class Meta:
        ordering = ["tier__rank", "pk"]
        verbose_name = _("requirement")
        verbose_name_plural = _("requirements")
        constraints = [
            models.CheckConstraint(
                condition=(Q(window="rolling_days", window_days__gte=1))
                | (~Q(window="rolling_days") & Q(window_days__isnull=True)),
                name="requirement_days_only_for_rolling_window",
            ),
            models.CheckConstraint(
                condition=Q(threshold__gte=0), name="requirement_threshold_not_negative"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_metric_display()} >= {self.threshold}"

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


class GrowthWeight(models.Model):
    """Points of growth value (成长值) that one activity kind earns."""

    kind = models.OneToOneField(
        "members.ActivityKind",
        verbose_name=_("activity kind"),
        on_delete=models.CASCADE,
        related_name="growth_weight",
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

    class Meta:
        verbose_name = _("growth value weight")
        verbose_name_plural = _("growth value weights")

    def __str__(self) -> str:
        return str(self.kind)


class TierChange(models.Model):
    """A change of a member's tier, with the evaluation that decided it."""

    class Reason(models.TextChoices):
        INITIAL = "initial", _("First evaluation")
        PROMOTION = "promotion", _("Promotion")
        DEMOTION = "demotion", _("Demotion")

    member = models.ForeignKey(
        "members.Member", on_delete=models.CASCADE, related_name="tier_changes"
    )
    from_tier = models.ForeignKey(
        Tier, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    to_tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="+")
    changed_at = models.DateTimeField(_("changed at"))
    as_of = models.DateTimeField(
        _("evaluated as of"), help_text=_("The moment the metrics were computed for.")
    )
    reason = models.CharField(_("reason"), max_length=16, choices=Reason)
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
