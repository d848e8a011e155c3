"""Members choosing benefits from their tier's pools.

A member picks up to ``pool.choose`` options of each pool of their current
tier in each tier period. Choices run under a lock on the member's row, and
each takes a numbered slot 1..N that a unique constraint keeps to one grant,
so two choices sent at once never exceed N.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from benefits.issuing import BenefitDatesError, create_grant
from benefits.models import BenefitPool, Grant, TierPeriod
from members.models import Member

logger = logging.getLogger(__name__)


class PoolChoiceError(Exception):
    """Raised with a message for the member when a choice is not possible."""


def current_period(member_id: int, tier_id: int) -> TierPeriod | None:
    """Return the member's latest period of the tier, where pool choices count."""
    return (
        TierPeriod.objects.filter(member_id=member_id, tier_id=tier_id)
        .order_by("-ends_at")
        .first()
    )


def choose_from_pool(
    member: Member, pool_id: int, benefit_id: int, now: dt.datetime | None = None
) -> Grant:
    """Grant the member one option of a pool, if they have a choice left.

    Raises PoolChoiceError when the pool is not of the member's tier, the
    option is not in the pool, the member already has it, all N choices
    of the period are made, or the option's expiry or approval deadline
    overflows datetime.
    """
    now = now or timezone.now()
    with transaction.atomic():
        locked = Member.objects.select_for_update().get(pk=member.pk)
        pool = BenefitPool.objects.filter(pk=pool_id).select_related("tier").first()
        if pool is None or pool.tier_id != locked.tier_id:
            raise PoolChoiceError(
                _(
                    "This choice is not offered to your tier. Reload the page to see your current choices."
                )
            )
        benefit = pool.options.filter(pk=benefit_id).first()
        if benefit is None:
            raise PoolChoiceError(
                _("That option is not in “%(pool)s”. Pick one of the options listed.")
                % {"pool": pool.name}
            )
        period = current_period(locked.pk, pool.tier_id)
        if period is None:
            raise PoolChoiceError(
                _(
                    "Your benefits for this tier are still being issued. Try again in a few minutes."
                )
            )
        chosen = list(
            Grant.objects.filter(period=period, pool=pool).values_list(
                "benefit_id", "pool_slot"
            )
        )
        if any(chosen_id == benefit.pk for chosen_id, _slot in chosen):
            raise PoolChoiceError(
                _("You have already chosen “%(benefit)s”.") % {"benefit": benefit.name}
            )
        taken_slots = {slot for _id, slot in chosen}
        free_slots = [
            slot for slot in range(1, pool.choose + 1) if slot not in taken_slots
        ]
        if not free_slots:
            raise PoolChoiceError(
                _(
                    "You have already made all %(count)d of your choices from “%(pool)s”."
                )
                % {"count": pool.choose, "pool": pool.name}
            )
        if not benefit.is_offered(now):
            raise PoolChoiceError(
                _("“%(benefit)s” is no longer offered. Pick another option.")
                % {"benefit": benefit.name}
            )
        try:
            grant = create_grant(
                member_id=locked.pk,
                benefit=benefit,
                tier_id=pool.tier_id,
                period=period,
                origin=Grant.Origin.POOL,
                now=now,
                pool=pool,
                pool_slot=free_slots[0],
            )
        except IntegrityError:
            # The member already has this benefit in the period from their
            # tier, or a concurrent choice took the slot.
            raise PoolChoiceError(
                _(
                    "You already have “%(benefit)s” or have no choice left in “%(pool)s”."
                )
                % {"benefit": benefit.name, "pool": pool.name}
            ) from None
        except BenefitDatesError as error:
            # Raising leaves the atomic block, which undoes the stock taken.
            logger.error(
                "member %d could not choose benefit %d from pool %d: %s",
                locked.pk,
                benefit.pk,
                pool.pk,
                error,
            )
            raise PoolChoiceError(
                _(
                    "“%(benefit)s” cannot be issued at the moment. Pick another option or try again later."
                )
                % {"benefit": benefit.name}
            ) from None
    if grant.status == Grant.Status.AWAITING_STOCK:
        logger.warning(
            "benefit %d is out of stock: grant %d chosen from pool %d waits for "
            "stock; raise the stock to issue it",
            benefit.pk,
            grant.pk,
            pool.pk,
        )
    logger.info(
        "member %d chose benefit %d from pool %d (grant %d, slot %d)",
        locked.pk,
        benefit.pk,
        pool.pk,
        grant.pk,
        free_slots[0],
    )
    return grant
