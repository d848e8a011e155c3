"""The benefits section of the member page: grants and pools, formatted.

members.page_data loads the rows these functions format.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.translation import gettext as _

from benefits.models import Benefit, BenefitPool, Grant, TierPeriod
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


def pool_rows(
    pools: Sequence[tuple[BenefitPool, Sequence[Benefit]]],
    grants: Sequence[Grant],
    period: TierPeriod | None,
) -> list[PoolRow]:
    """Build the rows of the tier's pools, marking what was chosen this period.

    ``pools`` pairs each pool of the member's tier with its options, and
    ``period`` is the member's current period in that tier (see
    benefits.pools.current_period), where choices count. Runs no query.
    """
    rows = []
    for pool, options in pools:
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
                    for option in options
                ],
            )
        )
    return rows
