"""What happens after tier changes are committed: benefits and messages.

Evaluation and overrides write TierChange rows. Once their transaction
commits, the tasks below are queued on django-q2. Each task reads the
committed rows, not ids passed to it, and skips what it has already done, so
a repeated queue entry changes nothing. A periodic schedule of the same
tasks picks up whatever a lost entry or a crash left behind.
"""

from __future__ import annotations

import logging

from django.db import transaction
from django_q.tasks import async_task

logger = logging.getLogger(__name__)

# Dotted paths, so that tiers does not import the apps that react to it.
TIER_CHANGE_TASKS = (
    "benefits.issuing.issue_for_tier_changes",
    "members.notifications.queue_tier_change_messages",
)


def _queue() -> None:
    for task in TIER_CHANGE_TASKS:
        try:
            async_task(task, task_name=f"after-tier-changes:{task}")
        except Exception:
            # The periodic schedule runs the task later; the change itself
            # is committed and must not be reported as failed.
            logger.exception("could not queue %s after tier changes", task)


def after_tier_changes() -> None:
    """Queue the follow-up tasks once the current transaction commits."""
    transaction.on_commit(_queue)
