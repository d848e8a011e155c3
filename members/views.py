"""The member's own page, opened through a signed link (see members.links)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.translation import get_language
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from benefits.pages import grant_rows, member_grants, pool_rows, tier_benefits
from members.links import ExpiredMemberLink, MemberLinkError, member_from_token
from members.models import Member
from members.notifications import recent_in_app_messages
from tiers.formatting import format_date, format_money
from tiers.ladder import Ladder
from tiers.models import ReviewWarning
from tiers.outlook import member_pace
from tiers.progress import member_progress
from tiers.rendering import activity_label
from tiers.warnings import warning_text

logger = logging.getLogger(__name__)

RECENT_ACTIVITY_COUNT = 10


@dataclass(frozen=True)
class ActivityRow:
    """One line of the recent activity list, formatted for display."""

    date_text: str
    channel: str
    kind: str
    amount_text: str


def _recent_activity(member: Member) -> list[ActivityRow]:
    """Return the newest activities, with channel and kind joined in one query."""
    activities = member.activities.select_related("channel", "kind").order_by(
        "-occurred_at", "-pk"
    )[:RECENT_ACTIVITY_COUNT]
    return [
        ActivityRow(
            date_text=format_date(activity.occurred_at),
            channel=str(activity.channel),
            kind=activity_label(activity, get_language() or settings.LANGUAGE_CODE),
            # Visits, reviews and referrals carry no amount, so none is shown.
            amount_text=format_money(activity.amount) if activity.amount else "",
        )
        for activity in activities
    ]


def _benefits(member: Member) -> dict[str, object]:
    """Return the benefits section: the tier's benefits, grants and pools."""
    grants = member_grants(member)
    return {
        "benefits": tier_benefits(member),
        "grants": grant_rows(grants),
        "pools": pool_rows(member, grants),
    }


def _review_warning(member: Member) -> str:
    """Return the warning text for the member's next review, or "" if none.

    Costs one query, and none for a member without a review date.
    """
    if member.review_at is None or member.tier_id is None:
        return ""
    warning = (
        ReviewWarning.objects.select_related("tier")
        .filter(member=member, review_at=member.review_at, tier=member.tier_id)
        .first()
    )
    if warning is None:
        return ""
    return warning_text(warning, get_language() or settings.LANGUAGE_CODE)


def keep_private(response: HttpResponse) -> HttpResponse:
    """Mark a response to a member link as not for search engines."""
    # never_cache already forbids storing the page. This keeps search engines
    # from indexing a link that a member pasted somewhere public.
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


def link_error_response(request: HttpRequest, error: MemberLinkError) -> HttpResponse:
    """Return the page for a member link that failed: 410 if expired, else 404."""
    if isinstance(error, ExpiredMemberLink):
        response = render(
            request,
            "members/link_expired.html",
            {"max_age_days": settings.CRM_MEMBER_LINK_MAX_AGE_DAYS},
            status=410,
        )
    else:
        response = render(request, "members/link_invalid.html", status=404)
    return keep_private(response)


@require_safe
@never_cache
def member_page(request: HttpRequest, token: str) -> HttpResponse:
    """Render the tier, progress, benefits and recent activity for a link's member.

    Responds 404 for a forged, edited or garbled token and 410 for an expired
    one. Every response is marked no-store.
    """
    try:
        member = member_from_token(token)
    except MemberLinkError as error:
        logger.info("member page link rejected: %s", error)
        return link_error_response(request, error)

    if member.merged_into_id is not None:
        # The page names neither member: the link may be an old one passed on.
        return keep_private(render(request, "members/merged.html"))

    as_of = timezone.now()
    # Loaded once for the progress bars and the pace, so the figures agree.
    ladder = Ladder.load(as_of=as_of)
    progress = member_progress(member, as_of, ladder=ladder)
    context: dict[str, object] = {
        "member": member,
        "progress": progress,
        "pace": member_pace(member, progress.as_of, ladder=ladder),
        "review_warning": _review_warning(member),
        **_benefits(member),
        "activities": _recent_activity(member),
        "notifications": recent_in_app_messages(
            member, get_language() or settings.LANGUAGE_CODE
        ),
    }
    response = render(request, "members/member_page.html", context)
    return keep_private(response)
