"""Background jobs on django-q2. Delivery is at least once, so each is idempotent."""

from __future__ import annotations

import logging

from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task

from tiers.evaluation import evaluate
from tiers.ladder import Ladder
from tiers.models import RuleVersion

logger = logging.getLogger(__name__)

REEVALUATE_TASK = "tiers.jobs.reevaluate_everyone"


def queue_reevaluation(version: RuleVersion) -> None:
    """Queue the re-evaluation of everyone under ``version``, now or when it takes effect."""
    assert version.effective_from is not None
    if version.effective_from <= timezone.now():
        async_task(
            REEVALUATE_TASK, version.pk, task_name=f"reevaluate-v{version.number}"
        )
        logger.info("queued re-evaluation for rule version %d", version.number)
        return
    Schedule.objects.update_or_create(
        name=f"reevaluate-v{version.number}",
        defaults={
            "func": REEVALUATE_TASK,
            "args": repr(version.pk),
            "schedule_type": Schedule.ONCE,
            "next_run": version.effective_from,
            "repeats": 1,
        },
    )
    logger.info(
        "scheduled re-evaluation for rule version %d at %s",
        version.number,
        version.effective_from.isoformat(),
    )


def reevaluate_everyone(version_id: int) -> dict[str, int]:
    """Re-evaluate every member, chunk by chunk, if ``version_id`` is still in effect.

    Running it twice changes nothing more: evaluation writes a tier change
    only where the tier differs. A newer version in effect makes it a no-op.
    """
    now = timezone.now()
    in_effect = RuleVersion.objects.in_effect(now)
    if in_effect is None or in_effect.pk != version_id:
        logger.info(
            "skipped re-evaluation for rule version id=%d: not the version in effect",
            version_id,
        )
        return {"evaluated": 0, "changed": 0}
    logger.info("re-evaluation started for rule version %d", in_effect.number)
    summary, _ = evaluate(as_of=now, ladder=Ladder.load(in_effect))
    logger.info(
        "re-evaluation finished for rule version %d evaluated=%d changed=%d",
        in_effect.number,
        summary.evaluated,
        summary.changed,
    )
    return {"evaluated": summary.evaluated, "changed": summary.changed}
