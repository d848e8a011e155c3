"""Members, the channels they deal through, and the ledger of their activity."""

from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.utils.translation import gettext_lazy as _


class Channel(models.Model):
    """A place where members buy or interact: a store, a web shop, a social app."""

    class Kind(models.TextChoices):
        STORE = "store", _("Store")
        ECOMMERCE = "ecommerce", _("E-commerce")
        SOCIAL = "social", _("Social")
        OTHER = "other", _("Other")

    code = models.CharField(
        _("code"),
        max_length=64,
        unique=True,
        help_text=_("The channel's name in import files, e.g. store-xuhui or tmall."),
    )
    name = models.CharField(_("name"), max_length=120)
    kind = models.CharField(_("kind"), max_length=16, choices=Kind, default=Kind.OTHER)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        ordering = ["code"]
        verbose_name = _("channel")
        verbose_name_plural = _("channels")

    def __str__(self) -> str:
        return self.name or self.code


class Member(models.Model):
    public_id = models.UUIDField(
        default=uuid.uuid4,
        unique=True,
        editable=False,
        help_text=_("Random id used in signed member page links, never shown."),
    )
    name = models.CharField(_("name"), max_length=200, blank=True)
    phone = models.CharField(
        _("phone"), max_length=40, blank=True, help_text=_("As given by the member.")
    )
    phone_e164 = models.CharField(
        _("phone (E.164)"),
        max_length=20,
        blank=True,
        db_index=True,
        help_text=_(
            "Normalised form used for matching; empty if the phone is invalid."
        ),
    )
    email = models.EmailField(_("e-mail"), blank=True, db_index=True)
    joined_on = models.DateField(_("joined on"), null=True, blank=True)
    tier = models.ForeignKey(
        "tiers.Tier",
        verbose_name=_("tier"),
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="members",
    )
    tier_since = models.DateTimeField(_("tier since"), null=True, blank=True)
    review_at = models.DateTimeField(
        _("next review"),
        null=True,
        blank=True,
        db_index=True,
        help_text=_("When the member's hold on the tier is reviewed; empty if never."),
    )
    grace_until = models.DateTimeField(
        _("grace until"),
        null=True,
        blank=True,
        help_text=_("Set after a failed review: the drop waits until then."),
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["pk"]
        verbose_name = _("member")
        verbose_name_plural = _("members")
        permissions = [
            ("import", _("Can import members and activities")),
            ("export", _("Can export members and activities")),
        ]

    def __str__(self) -> str:
        return self.name or f"#{self.pk}"


class ChannelIdentity(models.Model):
    """A member's id in one channel: a card number, a shop account, an OpenID."""

    member = models.ForeignKey(
        Member, on_delete=models.CASCADE, related_name="identities"
    )
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="+")
    # Text, never a number: "00001" and "1" are different members.
    external_id = models.CharField(_("id in channel"), max_length=64)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)

    class Meta:
        verbose_name = _("channel identity")
        verbose_name_plural = _("channel identities")
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "external_id"], name="identity_unique_in_channel"
            ),
            models.CheckConstraint(
                condition=~Q(external_id=""), name="identity_external_id_not_empty"
            ),
        ]
        indexes = [models.Index(fields=["external_id"], name="identity_external_id")]

    def __str__(self) -> str:
        return f"{self.channel.code}:{self.external_id}"


class ActivityKind(models.Model):
    """A kind of ledger event. The role decides which metrics it feeds."""

    class Role(models.TextChoices):
        PURCHASE = "purchase", _("Purchase")
        REFUND = "refund", _("Refund")
        VISIT = "visit", _("Visit")
        REVIEW = "review", _("Review")
        REFERRAL = "referral", _("Referral")
        OTHER = "other", _("Other")

    code = models.SlugField(_("code"), max_length=40, unique=True)
    name = models.CharField(_("name"), max_length=80)
    role = models.CharField(_("role"), max_length=16, choices=Role, default=Role.OTHER)

    class Meta:
        ordering = ["code"]
        verbose_name = _("activity kind")
        verbose_name_plural = _("activity kinds")

    def __str__(self) -> str:
        return self.name


class Activity(models.Model):
    """One event in the ledger. (channel, reference) makes every event count once."""

    class Source(models.TextChoices):
        IMPORT = "import", _("Import")
        API = "api", _("API")
        ADMIN = "admin", _("Admin")

    member = models.ForeignKey(
        Member, on_delete=models.PROTECT, related_name="activities"
    )
    channel = models.ForeignKey(Channel, on_delete=models.PROTECT, related_name="+")
    kind = models.ForeignKey(ActivityKind, on_delete=models.PROTECT, related_name="+")
    occurred_at = models.DateTimeField(_("occurred at"))
    # Refunds are stored negative, so net spend is a plain sum.
    amount = models.DecimalField(
        _("amount"), max_digits=14, decimal_places=2, default=0
    )
    quantity = models.IntegerField(_("quantity"), default=1)
    reference = models.CharField(
        _("reference"),
        max_length=100,
        help_text=_("The channel's own id for this event, unique within the channel."),
    )
    source = models.CharField(
        _("source"), max_length=16, choices=Source, default=Source.ADMIN
    )
    recorded_at = models.DateTimeField(_("recorded at"), auto_now_add=True)

    class Meta:
        verbose_name = _("activity")
        verbose_name_plural = _("activities")
        constraints = [
            models.UniqueConstraint(
                fields=["channel", "reference"], name="activity_unique_reference"
            ),
            models.CheckConstraint(
                condition=~Q(reference=""), name="activity_reference_not_empty"
            ),
        ]
        indexes = [
            models.Index(fields=["member", "occurred_at"], name="activity_member_time"),
        ]

    def __str__(self) -> str:
        return f"{self.reference} ({self.occurred_at:%Y-%m-%d})"
