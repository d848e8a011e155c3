"""The benefit catalogue: what each tier unlocks for its members."""

from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class Benefit(models.Model):
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
    tiers = models.ManyToManyField(
        "tiers.Tier",
        verbose_name=_("tiers"),
        related_name="benefits",
        blank=True,
        help_text=_("Members in these tiers enjoy the benefit."),
    )

    class Meta:
        ordering = ["name"]
        verbose_name = _("benefit")
        verbose_name_plural = _("benefits")

    def __str__(self) -> str:
        return self.name
