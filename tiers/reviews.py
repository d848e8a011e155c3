"""Tier reviews: how long a hold on a tier lasts and what happens when it ends.

A member moves up as soon as the entry rules of a higher tier hold. Moving
down waits for the review date of a reviewed tier: at review, a member who
met the retention rules over the period that ends at the review moment keeps
the tier for another period, and one who did not drops as the tier's rule
sets, after an optional grace period. Tiers with "continuous" validity, or with "drop between
reviews" set, drop at once, except after a one-step drop: the tier dropped
to is then held until its next review, so a member moves one tier per review.
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


def period_end(review_at: dt.datetime) -> dt.datetime:
    """Return the last moment of the period that a review at ``review_at`` judges.

    A review's metrics are computed as of one microsecond before the review,
    so a "calendar year to date" window judged at 1 January 00:00 covers the
    year just ended instead of an empty one. Activity at the review moment
    itself counts towards the next period.
    """
    return review_at - dt.timedelta(microseconds=1)


def _period_anchor(
    review_at: dt.datetime, tier_since: dt.datetime | None, months: int
) -> tuple[dt.datetime, int]:
    """Return the moment the periods ending at ``review_at`` are counted from,
    and how many whole periods lie between that moment and ``review_at``.

    The anchor is the local day the tier was reached, at the review's local
    time of day, when ``review_at`` falls a whole number of periods after
    that day. Otherwise, for example when the first period started later
    because the tier became reviewed in a later rule version, periods are
    counted from ``review_at`` itself.
    """
    if tier_since is None:
        return review_at, 0
    zone = program_zone()
    reached = tier_since.astimezone(zone)
    review_local = review_at.astimezone(zone)
    anchor = dt.datetime.combine(reached.date(), review_local.time(), tzinfo=zone)
    elapsed = (review_local.year - reached.year) * 12 + (
        review_local.month - reached.month
    )
    if elapsed <= 0 or elapsed % months:
        return review_at, 0
    if _add_months(anchor, elapsed) != review_at:
        return review_at, 0
    return anchor, elapsed // months


def review_after(
    tier: TierRuleSet,
    review_at: dt.datetime,
    moment: dt.datetime,
    tier_since: dt.datetime | None = None,
) -> dt.datetime | None:
    """Return the first review after ``moment`` in the cycle of ``review_at``.

    A review job that runs late therefore does not shift the member's
    cycle. An N-month cycle counts whole periods from the day the tier was
    reached (``tier_since``) and clamps each review to its month on its own.
    A hold reached on 31 January with monthly reviews is thus reviewed on
    29 February and then on 31 March, not on 29 March. Returns ``review_at``
    when it is after ``moment``, and None for a tier without reviews.
    """
    if tier.validity == Validity.MONTHS:
        months = tier.validity_months or 12
        anchor, periods = _period_anchor(review_at, tier_since, months)
        following = review_at
        while following <= moment:
            periods += 1
            following = _add_months(anchor, periods * months)
        return following
    following_or_none: dt.datetime | None = review_at
    while following_or_none is not None and following_or_none <= moment:
        following_or_none = next_review(tier, following_or_none)
    return following_or_none


def _drop_target(
    ladder: Ladder, current: TierRuleSet, qualified: TierRuleSet
) -> TierRuleSet:
    if current.downgrade == Downgrade.ONE_STEP:
        return ladder.below(current.id)
    if current.downgrade == Downgrade.TO_BASE:
        return ladder.base
    return qualified


def _target_review(
    ladder: Ladder,
    current: TierRuleSet,
    target: TierRuleSet,
    review_at: dt.datetime | None,
    tier_since: dt.datetime | None,
    as_of: dt.datetime,
) -> dt.datetime | None:
    """Return the review date of the tier a member drops to at ``as_of``.

    The target of a one-step drop is held until its own first review or,
    when it has no reviews, until the next review in the cycle of the tier
    dropped from. A continuous tier held that way continues the cycle of the
    nearest reviewed one-step tier above it, so a chain of one-step drops
    moves one tier per review. The base tier, the target of any other drop,
    and a drop from a continuous tier that nothing held (``review_at`` is
    None) get the target tier's own review date, if any.
    """
    own_review = next_review(target, as_of)
    if current.downgrade != Downgrade.ONE_STEP or target.id == ladder.base.id:
        return own_review
    if own_review is not None or review_at is None:
        return own_review
    if current.reviewed:
        return review_after(current, review_at, as_of, tier_since)
    cycle = _one_step_tier_above(ladder, current)
    if cycle is None:
        return None
    # tier_since is the moment of the drop into ``current``, which is not on
    # the cycle, so periods are counted from ``review_at``.
    return review_after(cycle, review_at, as_of)


def _one_step_tier_above(ladder: Ladder, tier: TierRuleSet) -> TierRuleSet | None:
    """Return the lowest reviewed tier above ``tier`` that drops one step."""
    for higher in ladder.tiers:
        if higher.rank <= tier.rank:
            continue
        if higher.reviewed and higher.downgrade == Downgrade.ONE_STEP:
            return higher
    return None


def decide_with_reviews(
    ladder: Ladder,
    decided: TierRuleSet,
    current: TierRuleSet | None,
    review_at: dt.datetime | None,
    grace_until: dt.datetime | None,
    as_of: dt.datetime,
    *,
    tier_since: dt.datetime | None = None,
    decided_at_review: TierRuleSet | None = None,
    held_after_drop: bool = False,
) -> Outcome:
    """Turn the tier the rules give into what the member gets now.

    ``decided`` is the rules' tier on this run's metrics, and
    ``decided_at_review`` the rules' tier on the metrics of the period that
    ends at ``review_at`` (see period_end),
    which the caller computes for a member whose review is due and who is
    not in a grace period. Both include the retention check: they are below
    ``current`` only when the current tier's retention rules fail. A due
    review is judged on ``decided_at_review`` when it is given, so activity
    after the review date does not decide whether a late review job keeps
    the tier. It can only raise the tier dropped to (see settle_drop).
    When such a job finds several reviews due, the caller passes the first
    one the member failed, or else the last one, as ``review_at``.
    Promotions, and catching up during a grace period, use ``decided``.

    ``held_after_drop`` marks a member who reached ``current`` by a one-step
    drop whose hold lasts until ``review_at``.
    """
    if current is None:
        return Outcome(
            decided, TierChange.Reason.INITIAL, next_review(decided, as_of), None
        )
    if decided.rank > current.rank:
        return Outcome(
            decided, TierChange.Reason.PROMOTION, next_review(decided, as_of), None
        )
    held = held_after_drop and review_at is not None
    if not current.reviewed and not held:
        return _decide_without_hold(ladder, decided, current, review_at, as_of)
    if review_at is None:
        # The tier became reviewed in a later version (or the hold predates
        # reviews): start its first period now instead of holding it forever.
        review_at = next_review(current, as_of)
        assert review_at is not None

    review_due = as_of >= review_at
    judged = decided
    if review_due and grace_until is None and decided_at_review is not None:
        judged = decided_at_review
    if judged.rank >= current.rank:
        if review_due:
            renewed = review_after(current, review_at, as_of, tier_since)
            return Outcome(current, TierChange.Reason.RENEWAL, renewed, None)
        return Outcome(current, None, review_at, None)

    # The retention rules of the current tier fail.
    if not review_due and (held or not current.demote_between_reviews):
        return Outcome(current, None, review_at, grace_until, held_by="review")
    if review_due and current.reviewed and current.grace_days:
        # Grace runs from the review date, so a late review job does not
        # lengthen it.
        until = grace_until or review_at + dt.timedelta(days=current.grace_days)
        if as_of < until:
            if decided.id == current.id:
                # Failed on the review date, caught up since, within grace.
                renewed = review_after(current, review_at, as_of, tier_since)
                return Outcome(current, TierChange.Reason.RENEWAL, renewed, None)
            if grace_until is None:
                return Outcome(
                    current, TierChange.Reason.GRACE, review_at, until, held_by="grace"
                )
            return Outcome(current, None, review_at, grace_until, held_by="grace")
    # The caller raises the target to the tier the entry rules give on this
    # run's metrics (see settle_drop), so a second run does not promote.
    target = _drop_target(ladder, current, judged)
    target_review = _target_review(
        ladder, current, target, review_at, tier_since, as_of
    )
    return Outcome(target, TierChange.Reason.DEMOTION, target_review, None)


def _decide_without_hold(
    ladder: Ladder,
    decided: TierRuleSet,
    current: TierRuleSet,
    review_at: dt.datetime | None,
    as_of: dt.datetime,
) -> Outcome:
    """Decide for a continuous tier that no one-step drop holds.

    A review date left from a version in which the tier was reviewed is
    kept until it passes and then cleared, without a history row.
    """
    if decided.id == current.id:
        if review_at is not None and as_of >= review_at:
            return Outcome(current, None, None, None)
        return Outcome(current, None, review_at, None)
    target = _drop_target(ladder, current, decided)
    target_review = _target_review(ladder, current, target, None, None, as_of)
    return Outcome(target, TierChange.Reason.DEMOTION, target_review, None)


def settle_drop(
    outcome: Outcome,
    current: TierRuleSet,
    reentered: TierRuleSet,
    as_of: dt.datetime,
) -> Outcome:
    """Raise a demotion to the tier an immediate re-evaluation would promote to.

    ``reentered`` is the tier the rules and the publish policy give on this
    run's metrics to a member placed in ``outcome.tier`` at ``as_of``. A
    member who meets the entry rules of a tier above the drop target lands
    there, with that tier's own review date, so running the same evaluation
    again writes nothing. A member who meets the entry rules of ``current``
    again keeps it and starts a new period at ``as_of``, recorded as a
    renewal.
    """
    if outcome.reason != TierChange.Reason.DEMOTION:
        return outcome
    if reentered.rank <= outcome.tier.rank:
        return outcome
    if reentered.rank >= current.rank:
        return Outcome(
            current, TierChange.Reason.RENEWAL, next_review(current, as_of), None
        )
    return Outcome(
        reentered, TierChange.Reason.DEMOTION, next_review(reentered, as_of), None
    )
