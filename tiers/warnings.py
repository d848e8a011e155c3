"""Warnings before a review that a member's tier is at risk.

record_review_warnings() finds members whose review falls within the next few
days and who would drop if the review ran today, and stores what they lack as
a ReviewWarning. Members whose active fixed override or floor keeps the tier
past the review, and members whose tier the publish policy keeps, get none. warning_text() turns a warning into one sentence for the
member, such as "Review on 30 June: ¥800 more net spend keeps Gold".
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from decimal import Decimal
from typing import Any, NamedTuple

from django.conf import settings
from django.db.models import BooleanField, Exists, OuterRef, Q, Value
from django.utils import timezone, translation
from django.utils.translation import gettext, pgettext

from members.models import Activity, Member
from tiers.evaluation import MemberEvaluation, _hold_by_policy, iter_evaluations
from tiers.formatting import format_day_month
from tiers.ladder import Ladder
from tiers.models import ReviewWarning, RuleGroup, RuleVersion, TierOverride
from tiers.progress import describe_shortfall
from tiers.rendering import _join, _supported_language

logger = logging.getLogger(__name__)

# The keys of a requirement row of a rule check that a shortfall keeps.
_REQUIREMENT_KEYS = ("requirement", "metric", "window", "days", "value", "threshold")


def unmet_requirements(check: Mapping[str, Any]) -> dict[str, Any]:
    """Prune a checked rule tree to the requirements and groups not met.

    ``check`` is a group node such as TierRuleSet.check()["rule"]. Each group
    of the result has its operator, ``needed`` (how many of its items must
    still be met) and its unmet items. A requirement keeps its id, metric,
    window, days, value and threshold.
    """
    items: list[dict[str, Any]] = []
    met_count = 0
    for item in check["items"]:
        if item["met"]:
            met_count += 1
        elif "items" in item:
            items.append(unmet_requirements(item))
        else:
            items.append({key: item[key] for key in _REQUIREMENT_KEYS})
    if check["operator"] == RuleGroup.Operator.ANY:
        needed = 1
    elif check["operator"] == RuleGroup.Operator.AT_LEAST:
        needed = max((check["at_least"] or 0) - met_count, 0)
    else:
        needed = len(items)
    return {"operator": check["operator"], "needed": needed, "items": items}


class DueReview(NamedTuple):
    """A coming review of a member, with what the publish policy needs."""

    review_at: dt.datetime
    tier_since: dt.datetime | None
    # Whether activity was recorded after the version took effect. It is
    # always True unless the version's policy is "new_activity".
    has_new_activity: bool


def _warning_for(
    ladder: Ladder,
    evaluation: MemberEvaluation,
    due: DueReview,
    as_of: dt.datetime,
) -> ReviewWarning | None:
    """Build the warning for one evaluated member, or None if the tier is safe.

    The tier is at risk when a review today would place the member lower,
    that is when neither the entry nor the retention rules of the member's
    current tier are met and the publish policy in force on the review date
    does not keep the tier.
    """
    current = ladder.by_id(evaluation.previous_tier_id)
    if current is None:
        return None
    chosen, _ = ladder.choose(evaluation.metrics, current.id)
    # Judged as of the review date: "new_activity" keeps the tier of a
    # member without new activity then too, while "grandfather" keeps a
    # tier only until its review.
    chosen, _ = _hold_by_policy(
        ladder,
        chosen,
        current.id,
        due.tier_since,
        due.review_at,
        due.has_new_activity,
        due.review_at,
    )
    if chosen.rank >= current.rank:
        return None
    check = current.check(evaluation.metrics, as_of, retention=True)
    # A tier without rules is always met, so a tier at risk has a rule tree.
    assert check["rule"] is not None
    return ReviewWarning(
        member_id=evaluation.member_id,
        tier_id=current.id,
        review_at=due.review_at,
        as_of=as_of,
        shortfall=unmet_requirements(check["rule"]),
    )


def _override_keeps_tier(as_of: dt.datetime) -> Exists:
    """Return whether an active fixed override or floor, requested by
    ``as_of``, keeps the member's tier or a higher one past its review."""
    keeping = TierOverride.objects.filter(
        Q(until__isnull=True) | Q(until__gt=OuterRef("review_at")),
        member_id=OuterRef("pk"),
        status=TierOverride.Status.ACTIVE,
        mode__in=[TierOverride.Mode.FIXED, TierOverride.Mode.FLOOR],
        requested_at__lte=as_of,
        tier__rank__gte=OuterRef("tier__rank"),
    )
    return Exists(keeping)


def _due_reviews(
    ladder: Ladder, as_of: dt.datetime, days_ahead: int
) -> dict[int, DueReview]:
    """Return the coming reviews to check for warnings, by member id, in one query.

    A review is due when it falls after ``as_of`` and at most ``days_ahead``
    days later, the member has no warning for it yet, and no override keeps
    the tier past it.
    """
    already_warned = ReviewWarning.objects.filter(
        member_id=OuterRef("pk"), review_at=OuterRef("review_at")
    )
    has_new_activity: Exists | Value = Value(True, output_field=BooleanField())
    if ladder.policy == RuleVersion.Policy.NEW_ACTIVITY and ladder.effective_from:
        has_new_activity = Exists(
            Activity.objects.filter(
                member_id=OuterRef("pk"), recorded_at__gte=ladder.effective_from
            )
        )
    # The range filter leaves out members without a review date.
    rows = (
        Member.objects.filter(
            tier__isnull=False,
            review_at__gt=as_of,
            review_at__lte=as_of + dt.timedelta(days=days_ahead),
        )
        .exclude(Exists(already_warned))
        .exclude(_override_keeps_tier(as_of))
        .annotate(has_new_activity=has_new_activity)
        .values_list("pk", "review_at", "tier_since", "has_new_activity")
    )
    due: dict[int, DueReview] = {}
    for member_id, review_at, tier_since, new_activity in rows:
        assert review_at is not None
        due[member_id] = DueReview(review_at, tier_since, new_activity)
    return due


def record_review_warnings(
    as_of: dt.datetime | None = None, days_ahead: int | None = None
) -> int:
    """Store a warning for each member whose tier is at risk at a coming review.

    A member gets one when the review date falls after ``as_of`` and at most
    ``days_ahead`` days later (default: settings.CRM_REVIEW_WARNING_DAYS),
    and the current tier's rules are not met as of ``as_of``. A member that
    already has a warning for that review date is skipped, so a rerun adds
    nothing. So is a member whose active fixed override or floor keeps the
    tier past the review, or whose tier the "new_activity" publish policy
    keeps because no activity was recorded after the version took effect. The cost is a fixed number of queries per chunk of members,
    never a query per member. Returns the number of warnings created.
    """
    as_of = as_of or timezone.now()
    if timezone.is_naive(as_of):
        raise ValueError("as_of must be an aware datetime.")
    if days_ahead is None:
        days_ahead = settings.CRM_REVIEW_WARNING_DAYS
    if days_ahead < 0:
        raise ValueError(f"days_ahead={days_ahead} is negative; use 0 or more days.")
    ladder = Ladder.load(as_of=as_of)
    due_reviews = _due_reviews(ladder, as_of, days_ahead)
    created = 0
    for evaluations in iter_evaluations(ladder, list(due_reviews), as_of=as_of):
        warnings = []
        for evaluation in evaluations:
            warning = _warning_for(
                ladder, evaluation, due_reviews[evaluation.member_id], as_of
            )
            if warning is not None:
                warnings.append(warning)
        # A concurrent run may have stored some of these since the query
        # above, so the count can be higher than the rows really added.
        ReviewWarning.objects.bulk_create(warnings, ignore_conflicts=True)
        created += len(warnings)
    logger.info(
        "review warnings recorded as_of=%s days_ahead=%d due=%d created=%d",
        as_of.isoformat(),
        days_ahead,
        len(due_reviews),
        created,
    )
    return created


def _describe_unmet(node: Mapping[str, Any], nested: bool) -> str:
    """Describe what closes the gap of a pruned rule tree, in the active language.

    Requirements read as shortfalls ("¥800 more net spend"). A group joins
    them with "and" when all its items are needed, with "or" when any one
    is, and otherwise states how many of them are needed.
    """
    if "items" not in node:
        missing = Decimal(node["threshold"]) - Decimal(node["value"])
        return describe_shortfall(node["metric"], missing)
    parts = [_describe_unmet(item, nested=True) for item in node["items"]]
    if not parts:
        # Only an "any of" or "at least N of" group with too few items fails
        # with nothing unmet inside it.
        return pgettext("rule text", "a rule that no member can meet")
    if len(parts) == 1:
        return parts[0]
    needed = node["needed"]
    if needed >= len(parts):
        body = _join(parts, RuleGroup.Operator.ALL, nested)
    elif needed <= 1:
        body = _join(parts, RuleGroup.Operator.ANY, nested)
    else:
        body = gettext("at least %(count)s of these %(total)s: %(items)s") % {
            "count": needed,
            "total": len(parts),
            "items": pgettext("rule text: list of items", "; ").join(parts),
        }
    if nested:
        return pgettext("rule text", "(%(group)s)") % {"group": body}
    return body


def warning_text(warning: ReviewWarning, language: str) -> str:
    """Write a warning as one sentence in ``language`` ("zh-hans" or "en").

    For example "Review on 30 June: ¥800 more net spend keeps Gold". The
    shortfall is measured as of the warning's ``as_of``, so it can differ
    from what the member lacks on the review date. Load the warning with
    select_related("tier") to avoid a query. Raises ValueError for a
    language missing from settings.LANGUAGES.
    """
    with translation.override(_supported_language(language)):
        # Translators: "date" is a day and month such as "30 June", "missing"
        # a shortfall such as "¥800 more net spend" and "tier" a tier name.
        return gettext("Review on %(date)s: %(missing)s keeps %(tier)s") % {
            "date": format_day_month(warning.review_at),
            "missing": _describe_unmet(warning.shortfall, nested=False),
            "tier": warning.tier.name,
        }
