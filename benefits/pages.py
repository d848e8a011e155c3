"""The benefits section of the member page: tier benefits, grants and pools."""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.translation import gettext as _

from benefits.models import Benefit, BenefitPool, Grant
from benefits.pools import current_period
from members.models import Member
from tiers.formatting import format_date

Status = Grant.Status


@dataclass(frozen=True)
class GrantRow:
    """One issued benefit, formatted for the member page."""

    name: str
    description: str
    status: str
    status_text: str
    # The code is shown only once it can be redeemed or has been.
    code: str
    date_text: str


@dataclass(frozen=True)
class PoolOptionRow:
    benefit_id: int
    name: str
    description: str
    chosen: bool


@dataclass(frozen=True)
class PoolRow:
    """A pool of the member's tier with the choices made in the current period."""

    pool_id: int
    name: str
    choose: int
    chosen_count: int
    options: list[PoolOptionRow]

    @property
    def choices_left(self) -> int:
        return max(self.choose - self.chosen_count, 0)


def tier_benefits(member: Member) -> list[Benefit]:
    """Return the welcome and ongoing benefits of the member's tier."""
    # filter(tiers=None) would match benefits without any tier, so a member
    # without a tier gets an empty list instead.
    if member.tier_id is None:
        return []
    return list(Benefit.objects.filter(tiers=member.tier_id))


def _date_text(grant: Grant) -> str:
    if grant.status == Status.REDEEMED and grant.redeemed_at:
        return _("Redeemed on %(date)s") % {"date": format_date(grant.redeemed_at)}
    if grant.status == Status.EXPIRED and grant.expires_at:
        return _("Expired on %(date)s") % {"date": format_date(grant.expires_at)}
    if grant.status == Status.ENDED and grant.ended_at:
        return _("Ended on %(date)s") % {"date": format_date(grant.ended_at)}
    if grant.status == Status.AWAITING_APPROVAL and grant.approval_due_at:
        return _("Decided by %(date)s") % {"date": format_date(grant.approval_due_at)}
    if grant.status == Status.ISSUED:
        if grant.expires_at:
            return _("Valid until %(date)s") % {"date": format_date(grant.expires_at)}
        return _("No expiry")
    return ""


def member_grants(member: Member) -> list[Grant]:
    """Return all of the member's grants, newest first, with their benefits."""
    return list(
        Grant.objects.filter(member=member)
        .select_related("benefit")
        .order_by("-created_at", "-pk")
    )


def grant_rows(grants: list[Grant]) -> list[GrantRow]:
    """Format grants for the page; rejected grants are not shown to the member."""
    return [
        GrantRow(
            name=grant.benefit.name,
            description=grant.benefit.description,
            status=grant.status,
            status_text=str(grant.get_status_display()),
            code=grant.code if grant.status in (Status.ISSUED, Status.REDEEMED) else "",
            date_text=_date_text(grant),
        )
        for grant in grants
        if grant.status != Status.REJECTED
    ]


def pool_rows(member: Member, grants: list[Grant]) -> list[PoolRow]:
    """Return the pools of the member's tier, marking what they chose this period.

    Costs one query for the pools, and two more (options, current period)
    only when the tier has pools.
    """
    if member.tier_id is None:
        return []
    pools = list(
        BenefitPool.objects.filter(tier=member.tier_id)
        .prefetch_related("options")
        .order_by("name", "pk")
    )
    if not pools:
        return []
    period = current_period(member.pk, member.tier_id)
    rows = []
    for pool in pools:
        chosen = {
            grant.benefit_id
            for grant in grants
            if period is not None
            and grant.period_id == period.pk
            and grant.pool_id == pool.pk
        }
        rows.append(
            PoolRow(
                pool_id=pool.pk,
                name=pool.name,
                choose=pool.choose,
                chosen_count=len(chosen),
                options=[
                    PoolOptionRow(
                        benefit_id=option.pk,
                        name=option.name,
                        description=option.description,
                        chosen=option.pk in chosen,
                    )
                    for option in sorted(pool.options.all(), key=lambda b: b.name)
                ],
            )
        )
    return rows
