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

from benefits.pages import grant_rows, pool_rows
from members.links import ExpiredMemberLink, MemberLinkError, member_from_token
from members.models import Activity
from members.notifications import in_app_items
from members.page_data import load_page_rows
from tiers.formatting import format_date, format_money
from tiers.ladder_cache import cached_ladder
from tiers.outlook import member_pace, pace_days, pace_specs
from tiers.progress import member_progress
from tiers.rendering import activity_label
from tiers.warnings import warning_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ActivityRow:
    """One line of the recent activity list, formatted for display."""

    date_text: str
    channel: str
    kind: str
    amount_text: str


def _activity_rows(activities: list[Activity], language: str) -> list[ActivityRow]:
    """Format activities whose channel and kind are loaded already."""
    return [
        ActivityRow(
            date_text=format_date(activity.occurred_at),
            channel=str(activity.channel),
            kind=activity_label(activity, language),
            # Visits, reviews and referrals carry no amount, so none is shown.
            amount_text=format_money(activity.amount) if activity.amount else "",
        )
        for activity in activities
    ]


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
    language = get_language() or settings.LANGUAGE_CODE
    # Three queries in the usual case. The first loaded the member with its
    # tier above. One UNION ALL loads the page's rows (overrides, grants,
    # benefits, pools, activity, messages, the review warning), and one
    # aggregate the metrics of the rules and of the pace. member_progress()
    # lists the cases that cost more. The ladder comes from the cache, which
    # publishing resets, and costs no query while the cache contains it.
    ladder = cached_ladder(as_of)
    rows = load_page_rows(member)
    progress = member_progress(
        member,
        as_of,
        ladder=ladder,
        overrides=rows.overrides,
        extra_specs=pace_specs(ladder, pace_days()).values(),
    )
    warning = rows.review_warning
    context: dict[str, object] = {
        "member": member,
        "progress": progress,
        # The same ladder and metrics as the progress bars, so the figures agree.
        "pace": member_pace(
            member,
            progress.as_of,
            ladder=ladder,
            metrics=progress.metrics,
            overrides=rows.overrides,
        ),
        "review_warning": warning_text(warning, language) if warning else "",
        "benefits": rows.tier_benefits,
        "grants": grant_rows(rows.grants),
        "pools": pool_rows(rows.pools, rows.grants, rows.period),
        "activities": _activity_rows(rows.activities, language),
        "notifications": in_app_items(rows.messages, language),
    }
    response = render(request, "members/member_page.html", context)
    return keep_private(response)
