"""Tier reviews: how long a hold on a tier lasts and what happens when it ends.

A member moves up as soon as the entry rules of a higher tier hold. Moving
down waits for the review date of a reviewed tier: at review, a member who
meets the retention rules keeps the tier for another period, and one who does
not drops as the tier's rule sets, after an optional grace period. Tiers with
"continuous" validity, or with "drop between reviews" set, drop at once.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass

from tiers.ladder import Ladder, TierRuleSet
from tiers.metrics import program_zone
from tiers.models import Downgrade, TierChange, Validity


@dataclass(frozen=True)
class Outcome:
    tier: TierRuleSet
    # A history row to write, or None when nothing worth recording happened.
    reason: str | None
    review_at: dt.datetime | None
    grace_until: dt.datetime | None
    held_by: str = ""  # "review" or "grace" when a drop is waiting


def _add_months(moment: dt.datetime, months: int) -> dt.datetime:
    local = moment.astimezone(program_zone())
    month_index = local.month - 1 + months
    year = local.year + month_index // 12
    month = month_index % 12 + 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    return local.replace(year=year, month=month, day=day)


def next_review(tier: TierRuleSet, start: dt.datetime) -> dt.datetime | None:
    """Return when a hold on ``tier`` that starts at ``start`` is reviewed.

    "N months" keeps the day of the month, or the month's last day when it is
    shorter (31 January + 1 month is 28 or 29 February). "Calendar year" ends
    at the next 1 January 00:00 in the program's time zone.
    """
    if tier.validity == Validity.MONTHS:
        return _add_months(start, tier.validity_months or 12)
    if tier.validity == Validity.CALENDAR_YEAR:
        local_year = start.astimezone(program_zone()).year
        return dt.datetime(local_year + 1, 1, 1, tzinfo=program_zone())
    return None


def _renewed_review(tier: TierRuleSet, review_at: dt.datetime, as_of: dt.datetime):  # type: ignore[no-untyped-def]
    """Return the first review after ``as_of`` of a hold renewed at ``review_at``.

    Periods are counted from the old review date, so a review job that runs
    late does not shift the member's cycle.
    """
    # TODO: count periods from the day the tier was reached, not from the last
    # (possibly month-end clamped) review, so 31 Jan + 1 month stays on the 31st.
    following = next_review(tier, review_at)
    while following is not None and following <= as_of:
        following = next_review(tier, following)
    return following


def _drop_target(
    ladder: Ladder, current: TierRuleSet, qualified: TierRuleSet
) -> TierRuleSet:
    if current.downgrade == Downgrade.ONE_STEP:
        return ladder.below(current.id)
    if current.downgrade == Downgrade.TO_BASE:
        return ladder.base
    return qualified


def decide_with_reviews(
    ladder: Ladder,
    decided: TierRuleSet,
    current: TierRuleSet | None,
    review_at: dt.datetime | None,
    grace_until: dt.datetime | None,
    as_of: dt.datetime,
) -> Outcome:
    """Turn the tier the rules give into what the member gets now.

    ``decided`` already includes the retention check: it is below ``current``
    only when the current tier's retention rules fail.
    """
    if current is None:
        return Outcome(
            decided, TierChange.Reason.INITIAL, next_review(decided, as_of), None
        )
    if decided.rank > current.rank:
        return Outcome(
            decided, TierChange.Reason.PROMOTION, next_review(decided, as_of), None
        )
    if current.reviewed and review_at is None:
        # The tier became reviewed in a later version (or the hold predates
        # reviews): start its first period now instead of holding it forever.
        review_at = next_review(current, as_of)
    review_due = review_at is not None and as_of >= review_at
    if decided.id == current.id:
        if review_due:
            assert review_at is not None
            renewed = _renewed_review(current, review_at, as_of)
            return Outcome(current, TierChange.Reason.RENEWAL, renewed, None)
        return Outcome(current, None, review_at, None)

    # The retention rules of the current tier fail.
    if current.reviewed and not current.demote_between_reviews and not review_due:
        return Outcome(current, None, review_at, grace_until, held_by="review")
    if current.reviewed and current.grace_days and review_at is not None and review_due:
        if grace_until is None:
            # Grace runs from the review date, so a late review job does not
            # lengthen it.
            until = review_at + dt.timedelta(days=current.grace_days)
            if as_of < until:
                return Outcome(
                    current, TierChange.Reason.GRACE, review_at, until, held_by="grace"
                )
        elif as_of < grace_until:
            return Outcome(current, None, review_at, grace_until, held_by="grace")
    # TODO: check retention with the metrics as of the review date rather than
    # of this run, and give a one-step drop target a hold of its own so a
    # second run the same night does not drop the member again.
    target = _drop_target(ladder, current, decided)
    return Outcome(target, TierChange.Reason.DEMOTION, next_review(target, as_of), None)
