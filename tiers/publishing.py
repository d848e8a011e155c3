"""Publishing a draft rule version, and the re-evaluation it may start."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from tiers.ladder_cache import forget_ladders
from tiers.metrics import program_zone
from tiers.models import RuleVersion
from tiers.validation import version_problems

logger = logging.getLogger(__name__)


class PublishError(Exception):
    """Raised when a version cannot be published; ``messages`` contains the reasons."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__(" ".join(messages))
        self.messages = messages


def scheduled_after(moment: dt.datetime) -> list[RuleVersion]:
    """Return the published versions taking effect after ``moment``, earliest first.

    Only versions still in the future count: a version already in effect is
    not scheduled, even when ``moment`` lies before its effective date.
    """
    start = max(moment, timezone.now())
    return list(
        RuleVersion.objects.filter(
            status=RuleVersion.Status.PUBLISHED, effective_from__gt=start
        ).order_by("effective_from", "number")
    )


def replacement_message(scheduled: list[RuleVersion]) -> str:
    """Explain that the ``scheduled`` versions would replace the version to publish.

    ``scheduled`` is what ``scheduled_after`` returns and must not be empty.
    The earliest of them replaces the version, and a date after the latest
    one avoids every replacement.
    """
    first, last = scheduled[0], scheduled[-1]
    assert first.effective_from is not None and last.effective_from is not None
    zone = program_zone()
    words = {
        "number": first.number,
        "when": f"{timezone.localtime(first.effective_from, zone):%Y-%m-%d %H:%M}",
        "last_number": last.number,
        "last_when": f"{timezone.localtime(last.effective_from, zone):%Y-%m-%d %H:%M}",
        "zone": settings.TIME_ZONE,
    }
    if len(scheduled) == 1:
        return (
            gettext(
                "Version %(number)d is scheduled to take effect at %(when)s "
                "(%(zone)s), so it would replace this version at that moment. Choose "
                "an effective date after %(when)s, or make these changes in a copy "
                "of version %(number)d instead."
            )
            % words
        )
    return (
        gettext(
            "Version %(number)d is scheduled to take effect at %(when)s (%(zone)s), "
            "so it would replace this version at that moment, and version "
            "%(last_number)d follows at %(last_when)s. Choose an effective date after "
            "%(last_when)s, or make these changes in a copy of version "
            "%(last_number)d instead."
        )
        % words
    )


def publish(
    version: RuleVersion,
    *,
    user: Any,
    reason: str,
    policy: str,
    effective_from: dt.datetime | None = None,
    allow_past: bool = False,
) -> RuleVersion:
    """Freeze a draft and make it take effect at ``effective_from`` (default now).

    With the "reevaluate" policy a background job re-evaluates every member
    once the version is in effect: at once after commit for an immediate
    version, or scheduled for a future one. ``allow_past`` lets set-up code
    (data loads, fixtures) backdate a version; staff screens never pass it.

    Raises PublishError when a published version is scheduled to take effect
    after ``effective_from``, because that version would replace this one the
    moment it takes effect.
    """
    if policy not in RuleVersion.Policy.values:
        raise PublishError([f"Unknown publish policy {policy!r}."])
    if not reason.strip():
        raise PublishError(
            ["Say why this version is published; the reason is audited."]
        )
    now = timezone.now()
    effective_from = effective_from or now
    if timezone.is_naive(effective_from):
        raise PublishError(["The effective date must include a time zone."])
    if not allow_past and effective_from < now - dt.timedelta(minutes=5):
        raise PublishError(
            ["The effective date is in the past; pick now or a future date."]
        )
    with transaction.atomic():
        locked = RuleVersion.objects.select_for_update().get(pk=version.pk)
        if not locked.is_draft:
            raise PublishError([f"Version {locked.number} is already published."])
        later = scheduled_after(effective_from)
        if later:
            raise PublishError([replacement_message(later)])
        problems = [p.message for p in version_problems(locked) if p.blocking]
        if problems:
            raise PublishError(problems)
        locked.status = RuleVersion.Status.PUBLISHED
        locked.published_by = user
        locked.published_at = now
        locked.effective_from = effective_from
        locked.publish_reason = reason.strip()
        locked.policy = policy
        locked._change_reason = f"Published: {reason.strip()}"  # type: ignore[attr-defined]
        locked.save()
        # Again after commit: a page that read the versions in between may
        # have cached them without this one.
        forget_ladders()
        transaction.on_commit(forget_ladders)
        if policy == RuleVersion.Policy.REEVALUATE:
            transaction.on_commit(lambda: _queue_reevaluation(locked))
    logger.info(
        "published rule version %d policy=%s effective_from=%s",
        locked.number,
        policy,
        effective_from.isoformat(),
    )
    return locked


def _queue_reevaluation(version: RuleVersion) -> None:
    from tiers.jobs import queue_reevaluation

    queue_reevaluation(version)
