"""The benefit catalogue, what each tier gives, and the grants issued to members.

A Benefit is a catalogue entry. TierBenefit attaches it to a tier, once on
reaching the tier (a welcome gift) or for as long as the member stays in it
(ongoing). A BenefitPool offers several benefits of which the member picks N.
A Grant is one benefit issued to one member for one TierPeriod, and carries
the code that channels redeem. benefits.issuing explains the periods.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

if TYPE_CHECKING:
    from tiers.models import Tier

# Upper bound of Benefit.valid_days and Benefit.approval_days: ten years of
# 366 days. Issuing adds these days to the current time, and a much larger
# number overflows Python's datetime (year 9999) and fails every grant of
# the benefit. A check constraint enforces the bound in the database too.
MAX_BENEFIT_DAYS = 3660


class Benefit(models.Model):
    """A catalogue entry: what a member gets, how long it stays valid, how many exist."""

    class Kind(models.TextChoices):
        COUPON = "coupon", _("Coupon")
        DISCOUNT = "discount", _("Discount")
        GIFT = "gift", _("Gift")
        SERVICE = "service", _("Service")
        POINTS = "points", _("Points")
        EVENT = "event", _("Event invitation")

    name = models.CharField(_("name"), max_length=120)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind)
    description = models.TextField(_("description"), blank=True)
    value = models.DecimalField(
        _("value"),
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text=_(
            "Points credited, percent off or money off, as the kind implies. "
            "Empty when the benefit has no amount."
        ),
    )
    valid_from = models.DateTimeField(
        _("valid from"),
        null=True,
        blank=True,
        help_text=_("Codes cannot be redeemed before this moment. Empty: at once."),
    )
    valid_until = models.DateTimeField(
        _("valid until"),
        null=True,
        blank=True,
        help_text=_(
            "Every grant expires at this moment at the latest, and nothing is "
            "issued after it. Empty: no fixed end."
        ),
    )
    valid_days = models.PositiveIntegerField(
        _("valid for days"),
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_BENEFIT_DAYS)],
        help_text=_(
            "Each grant expires this many days after it is issued, at most "
            "3660 (ten years). Empty: no limit in days."
        ),
    )
    stock = models.PositiveIntegerField(
        _("stock"),
        null=True,
        blank=True,
        help_text=_(
            "Items left to issue; each grant takes one. Empty means unlimited. "
            "Grants issued while the stock is 0 wait until it is raised."
        ),
    )
    approval_required = models.BooleanField(
        _("needs approval"),
        default=False,
        help_text=_("Grants wait in the approval queue until staff approve them."),
    )
    approval_days = models.PositiveSmallIntegerField(
        _("approval deadline (days)"),
        default=3,
        validators=[MinValueValidator(1), MaxValueValidator(MAX_BENEFIT_DAYS)],
        help_text=_(
            "Days staff have to approve or reject a grant, from 1 to 3660. A "
            "grant still undecided after that is approved automatically."
        ),
    )
    tiers: models.ManyToManyField[Tier, TierBenefit] = models.ManyToManyField(
        "tiers.Tier",
        through="TierBenefit",
        verbose_name=_("tiers"),
        related_name="benefits",
        blank=True,
    )

    class Meta:
        ordering = ["name"]
        verbose_name = _("benefit")
        verbose_name_plural = _("benefits")
        constraints = [
            models.CheckConstraint(
                condition=Q(stock__isnull=True) | Q(stock__gte=0),
                name="benefit_stock_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(valid_from__isnull=True)
                | Q(valid_until__isnull=True)
                | Q(valid_from__lt=models.F("valid_until")),
                name="benefit_valid_from_before_until",
            ),
            models.CheckConstraint(
                condition=Q(valid_days__isnull=True)
                | Q(valid_days__gte=1, valid_days__lte=MAX_BENEFIT_DAYS),
                name="benefit_valid_days_in_range",
            ),
            models.CheckConstraint(
                condition=Q(approval_days__gte=1, approval_days__lte=MAX_BENEFIT_DAYS),
                name="benefit_approval_days_in_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, Any] = {}
        if self.valid_from and self.valid_until and self.valid_from >= self.valid_until:
            errors["valid_until"] = _("Enter an end after the start of validity.")
        if self.value is not None and self.value < 0:
            errors["value"] = _(
                "The value %(value)s is negative. Enter 0 or more, or leave it empty."
            ) % {"value": self.value}
        elif (
            self.kind == self.Kind.DISCOUNT
            and self.value is not None
            and self.value > 100
        ):
            errors["value"] = _(
                "A discount of %(value)s%% is more than 100%%. Enter a percentage "
                "from 0 to 100."
            ) % {"value": self.value}
        if errors:
            raise ValidationError(errors)

    def expiry_for(self, issued_at: dt.datetime) -> dt.datetime | None:
        """Return when a grant issued at ``issued_at`` expires, or None if never.

        The earlier of ``valid_days`` after issue and ``valid_until`` wins.
        """
        ends = []
        if self.valid_days:
            ends.append(issued_at + dt.timedelta(days=self.valid_days))
        if self.valid_until:
            ends.append(self.valid_until)
        return min(ends) if ends else None

    def is_offered(self, moment: dt.datetime) -> bool:
        """Return whether a grant issued at ``moment`` would still be valid."""
        return self.valid_until is None or moment < self.valid_until


class TierBenefit(models.Model):
    """A benefit that a tier gives: once on reaching it, or while the member is in it."""

    class Mode(models.TextChoices):
        WELCOME = "welcome", _("Once on reaching the tier")
        ONGOING = "ongoing", _("While in the tier")

    tier = models.ForeignKey(
        "tiers.Tier",
        verbose_name=_("tier"),
        on_delete=models.CASCADE,
        related_name="tier_benefits",
    )
    benefit = models.ForeignKey(
        Benefit,
        verbose_name=_("benefit"),
        on_delete=models.CASCADE,
        related_name="tier_benefits",
    )
    # The default lets Benefit.tiers.add() create ongoing links.
    mode = models.CharField(
        _("given"), max_length=16, choices=Mode, default=Mode.ONGOING
    )

    class Meta:
        ordering = ["tier__rank", "benefit__name"]
        verbose_name = _("tier benefit")
        verbose_name_plural = _("tier benefits")
        constraints = [
            models.UniqueConstraint(
                fields=["tier", "benefit"], name="tierbenefit_unique_benefit"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tier} · {self.benefit} ({self.get_mode_display()})"


class BenefitPool(models.Model):
    """Benefits of a tier from which the member picks ``choose`` on their page."""

    tier = models.ForeignKey(
        "tiers.Tier",
        verbose_name=_("tier"),
        on_delete=models.CASCADE,
        related_name="benefit_pools",
    )
    name = models.CharField(_("name"), max_length=120)
    choose = models.PositiveSmallIntegerField(
        _("choices per period"),
        default=1,
        validators=[MinValueValidator(1)],
        help_text=_("How many options a member picks in each period of the tier."),
    )
    options = models.ManyToManyField(
        Benefit, verbose_name=_("options"), related_name="pools"
    )

    class Meta:
        ordering = ["tier__rank", "name"]
        verbose_name = _("benefit pool")
        verbose_name_plural = _("benefit pools")
        constraints = [
            models.CheckConstraint(
                condition=Q(choose__gte=1), name="benefitpool_choose_at_least_one"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tier} · {self.name}"


class TierPeriod(models.Model):
    """A stretch of one member's time in one tier that benefits are counted against.

    benefits.issuing opens periods and defines where they start and end.
    """

    member = models.ForeignKey(
        "members.Member",
        verbose_name=_("member"),
        on_delete=models.CASCADE,
        related_name="tier_periods",
    )
    tier = models.ForeignKey(
        "tiers.Tier",
        verbose_name=_("tier"),
        on_delete=models.PROTECT,
        related_name="+",
    )
    starts_at = models.DateTimeField(_("starts at"))
    ends_at = models.DateTimeField(_("ends at"))
    opened_by = models.ForeignKey(
        "tiers.TierChange",
        verbose_name=_("opened by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["member", "tier", "ends_at"]
        verbose_name = _("tier period")
        verbose_name_plural = _("tier periods")
        constraints = [
            models.UniqueConstraint(
                fields=["member", "tier", "ends_at"], name="tierperiod_unique_end"
            ),
            models.CheckConstraint(
                condition=Q(starts_at__lt=models.F("ends_at")),
                name="tierperiod_starts_before_end",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tier} · {self.starts_at:%Y-%m-%d} – {self.ends_at:%Y-%m-%d}"


class ProcessedTierChange(models.Model):
    """The record that benefits.issuing has handled one tier change.

    The primary key is the TierChange's, so a change is handled at most once
    even when two issuing runs overlap.
    """

    class Outcome(models.TextChoices):
        HANDLED = "handled", _("Handled")
        BEFORE_ISSUING = "before_issuing", _("Recorded before benefit issuing existed")

    change = models.OneToOneField(
        "tiers.TierChange",
        verbose_name=_("tier change"),
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="benefit_processing",
    )
    processed_at = models.DateTimeField(_("processed at"))
    outcome = models.CharField(
        _("outcome"), max_length=16, choices=Outcome, default=Outcome.HANDLED
    )
    period = models.ForeignKey(
        TierPeriod,
        verbose_name=_("period"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    grants_created = models.PositiveIntegerField(_("grants created"), default=0)

    class Meta:
        verbose_name = _("processed tier change")
        verbose_name_plural = _("processed tier changes")

    def __str__(self) -> str:
        return f"{self.change_id} · {self.get_outcome_display()}"


class Grant(models.Model):
    """One benefit issued to one member for one tier period."""

    class Origin(models.TextChoices):
        WELCOME = "welcome", _("Welcome benefit")
        ONGOING = "ongoing", _("Ongoing benefit")
        POOL = "pool", _("Chosen from a pool")

    class Status(models.TextChoices):
        AWAITING_STOCK = "awaiting_stock", _("Waiting for stock")
        AWAITING_APPROVAL = "awaiting_approval", _("Waiting for approval")
        ISSUED = "issued", _("Issued")
        REDEEMED = "redeemed", _("Redeemed")
        EXPIRED = "expired", _("Expired")
        ENDED = "ended", _("Ended: left the tier")
        REJECTED = "rejected", _("Rejected")

    member = models.ForeignKey(
        "members.Member",
        verbose_name=_("member"),
        on_delete=models.CASCADE,
        related_name="benefit_grants",
    )
    benefit = models.ForeignKey(
        Benefit,
        verbose_name=_("benefit"),
        on_delete=models.PROTECT,
        related_name="grants",
    )
    tier = models.ForeignKey(
        "tiers.Tier",
        verbose_name=_("tier"),
        on_delete=models.PROTECT,
        related_name="+",
    )
    period = models.ForeignKey(
        TierPeriod,
        verbose_name=_("period"),
        on_delete=models.CASCADE,
        related_name="grants",
    )
    origin = models.CharField(_("origin"), max_length=16, choices=Origin)
    tier_change = models.ForeignKey(
        "tiers.TierChange",
        verbose_name=_("tier change"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text=_("The tier change that issued it; empty for pool choices."),
    )
    pool = models.ForeignKey(
        BenefitPool,
        verbose_name=_("pool"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="grants",
    )
    # Numbers a member's choices from one pool in one period 1..N, so a
    # unique constraint stops a concurrent N+1st choice.
    pool_slot = models.PositiveSmallIntegerField(_("choice number"), null=True)
    status = models.CharField(_("status"), max_length=20, choices=Status)
    code = models.CharField(_("code"), max_length=20, unique=True)
    # Whether this grant took one item of the benefit's stock and keeps it.
    stock_taken = models.BooleanField(_("holds stock"), default=False)
    created_at = models.DateTimeField(_("created at"))
    issued_at = models.DateTimeField(_("issued at"), null=True, blank=True)
    expires_at = models.DateTimeField(_("expires at"), null=True, blank=True)
    approval_due_at = models.DateTimeField(
        _("approval deadline"),
        null=True,
        blank=True,
        help_text=_("Approved automatically at this moment if still undecided."),
    )
    decided_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("decided by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    decided_at = models.DateTimeField(_("decided at"), null=True, blank=True)
    auto_approved = models.BooleanField(
        _("approved automatically"),
        default=False,
        help_text=_("Nobody decided before the deadline."),
    )
    rejection_reason = models.TextField(_("reason for rejecting"), blank=True)
    ended_at = models.DateTimeField(_("ended at"), null=True, blank=True)
    redeemed_at = models.DateTimeField(_("redeemed at"), null=True, blank=True)
    redeemed_channel = models.ForeignKey(
        "members.Channel",
        verbose_name=_("redeemed in channel"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    redemption_reference = models.CharField(
        _("redemption reference"),
        max_length=100,
        blank=True,
        help_text=_("The channel's own id for the redemption, e.g. an order number."),
    )
    redeemed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name=_("redeemed by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    expiry_warned_at = models.DateTimeField(
        _("expiry warning sent at"), null=True, blank=True
    )

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("benefit grant")
        verbose_name_plural = _("benefit grants")
        permissions = [
            ("redeem_grant", _("Can redeem benefit grants")),
            ("approve_grant", _("Can approve or reject benefit grants")),
        ]
        indexes = [
            models.Index(fields=["member", "status"], name="grant_member_status"),
            models.Index(fields=["status", "expires_at"], name="grant_status_expiry"),
            models.Index(
                fields=["status", "approval_due_at"], name="grant_status_deadline"
            ),
        ]
        constraints = [
            # Exactly once per member, benefit and tier period.
            models.UniqueConstraint(
                fields=["member", "benefit", "period"], name="grant_once_per_period"
            ),
            models.UniqueConstraint(
                fields=["period", "pool", "pool_slot"],
                condition=Q(pool__isnull=False),
                name="grant_unique_pool_slot",
            ),
            models.CheckConstraint(
                condition=(
                    Q(origin="pool", pool__isnull=False, pool_slot__gte=1)
                    | (
                        ~Q(origin="pool")
                        & Q(pool__isnull=True)
                        & Q(pool_slot__isnull=True)
                    )
                ),
                name="grant_pool_fields_match_origin",
            ),
            models.CheckConstraint(
                condition=~Q(status="redeemed") | Q(redeemed_at__isnull=False),
                name="grant_redeemed_has_time",
            ),
            models.CheckConstraint(
                condition=~Q(status="awaiting_approval")
                | Q(approval_due_at__isnull=False),
                name="grant_awaiting_approval_has_deadline",
            ),
            models.CheckConstraint(
                condition=~Q(status__in=["issued", "redeemed", "expired"])
                | Q(issued_at__isnull=False),
                name="grant_issued_has_time",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} · {self.benefit_id}"

    def notification_params(self) -> dict[str, Any]:
        """Return the message parameters as plain JSON values."""
        return {
            "grant_id": self.pk,
            "benefit": self.benefit.name,
            "kind": self.benefit.kind,
            "code": self.code,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


# Grants that still give, or may still give, the member something. Leaving
# the tier ends ongoing grants in these statuses.
OPEN_STATUSES = (
    Grant.Status.AWAITING_STOCK,
    Grant.Status.AWAITING_APPROVAL,
    Grant.Status.ISSUED,
)


class GrantAwaitingApproval(Grant):
    """The approval queue: a view of grants that staff approve or reject."""

    class Meta:
        proxy = True
        verbose_name = _("grant awaiting approval")
        verbose_name_plural = _("approval queue")
