"""Background jobs on django-q2. Delivery is at least once, so each is idempotent.

Jobs that evaluate every member run under one JobLock, so an overlapping run
(a retried delivery, a re-evaluation during the nightly reviews) cannot
record the same tier change twice.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task

from tiers.evaluation import evaluate
from tiers.ladder import Ladder, LadderError
from tiers.models import JobLock, RuleVersion
from tiers.overrides import end_expired_overrides
from tiers.warnings import record_review_warnings

logger = logging.getLogger(__name__)

REEVALUATE_TASK = "tiers.jobs.reevaluate_everyone"
NIGHTLY_REVIEWS_TASK = "tiers.jobs.run_nightly_reviews"
EVALUATE_MEMBERS_TASK = "tiers.jobs.evaluate_members"
# The lock shared by every job that evaluates all members.
EVALUATION_LOCK = "tier-evaluation"
# How long a re-evaluation that found the lock taken waits before it tries again.
REEVALUATION_RETRY_DELAY = dt.timedelta(minutes=10)


class JobBusyError(Exception):
    """Raised by job_lock() when another run holds the lock."""


def evaluation_lock_timeout() -> int:
    """Return the seconds after which a held evaluation lock counts as abandoned.

    Jobs that evaluate every member run with ``evaluation_task_options()``,
    so django-q2 stops them after CRM_EVALUATION_TASK_TIMEOUT seconds, and a
    lock held longer than that belongs to a run that was stopped before it
    could release it.
    """
    return max(
        int(settings.CRM_EVALUATION_TASK_TIMEOUT),
        cast(int, settings.Q_CLUSTER["timeout"]),
    )


def evaluation_task_options() -> dict[str, int]:
    """Return the django-q2 options of a task that evaluates every member.

    The cluster's default ``timeout`` (600 s) is too short for a large
    program: the first evaluation of 1,000,000 members took about 32
    minutes in ``bench.reevaluate_bench``. django-q2 1.11 reads a per-task
    ``timeout`` from these options, given to ``async_task`` directly or in
    a schedule's ``q_options`` keyword argument.
    """
    return {"timeout": int(settings.CRM_EVALUATION_TASK_TIMEOUT)}


def _acquire(name: str, timeout: float, token: str) -> bool:
    now = timezone.now()
    fields = {"running": True, "locked_at": now, "token": token}
    # A free lock and an abandoned one are taken by separate conditional
    # UPDATEs, so that taking over an abandoned lock can be logged.
    if JobLock.objects.filter(name=name, running=False).update(**fields):
        return True
    expired = now - dt.timedelta(seconds=timeout)
    abandoned = Q(locked_at__isnull=True) | Q(locked_at__lt=expired)
    if JobLock.objects.filter(abandoned, name=name).update(**fields):
        logger.warning(
            "job lock %s taken over: the previous run held it for more than %s "
            "seconds without releasing it",
            name,
            timeout,
        )
        return True
    if JobLock.objects.filter(name=name).exists():
        return False
    try:
        # The savepoint keeps an outer transaction usable after a lost race.
        with transaction.atomic():
            JobLock.objects.create(name=name, **fields)
    except IntegrityError:
        # Another run inserted the first row for this name since the check.
        return False
    return True


def _release(name: str, token: str) -> None:
    released = JobLock.objects.filter(name=name, token=token).update(
        running=False, token=""
    )
    if not released:
        logger.warning(
            "job lock %s was taken over by another run before this run released "
            "it; the run took longer than the lock timeout",
            name,
        )


@contextmanager
def job_lock(name: str, timeout: float) -> Iterator[None]:
    """Hold the lock ``name`` while the block runs, or raise JobBusyError.

    Each UPDATE or INSERT that takes the lock is atomic on SQLite and
    PostgreSQL, so of two runs that start together exactly one gets it. A
    lock held for more than ``timeout`` seconds is taken over, because its
    run was killed before it could release it. Use it outside a transaction:
    inside one, other processes see the lock only after the commit.
    """
    token = uuid.uuid4().hex
    if not _acquire(name, timeout, token):
        raise JobBusyError(
            f"Job lock {name!r} is held by another run; try again when it ends "
            f"or after {timeout} seconds."
        )
    try:
        yield
    finally:
        _release(name, token)


def _schedule_reevaluation(version: RuleVersion, run_at: dt.datetime) -> None:
    Schedule.objects.update_or_create(
        name=f"reevaluate-v{version.number}",
        defaults={
            "func": REEVALUATE_TASK,
            "args": repr(version.pk),
            "kwargs": repr({"q_options": evaluation_task_options()}),
            "schedule_type": Schedule.ONCE,
            "next_run": run_at,
            "repeats": 1,
        },
    )


def queue_reevaluation(version: RuleVersion) -> None:
    """Queue the re-evaluation of everyone under ``version``, now or when it takes effect."""
    assert version.effective_from is not None
    if version.effective_from <= timezone.now():
        async_task(
            REEVALUATE_TASK,
            version.pk,
            task_name=f"reevaluate-v{version.number}",
            **evaluation_task_options(),
        )
        logger.info("queued re-evaluation for rule version %d", version.number)
        return
    _schedule_reevaluation(version, version.effective_from)
    logger.info(
        "scheduled re-evaluation for rule version %d at %s",
        version.number,
        version.effective_from.isoformat(),
    )


def evaluate_members(
    member_ids: list[int], as_of: dt.datetime | None = None
) -> dict[str, int]:
    """Evaluate ``member_ids`` as of ``as_of`` (default: now).

    The task that evaluate_when_due() schedules. Running it twice changes
    nothing more, as for every evaluation.
    """
    try:
        summary, _ = evaluate(member_ids, as_of=as_of)
    except LadderError as error:
        logger.warning(
            "scheduled evaluation skipped members=%d error=%s", len(member_ids), error
        )
        return {"evaluated": 0, "changed": 0}
    logger.info(
        "scheduled evaluation finished evaluated=%d changed=%d",
        summary.evaluated,
        summary.changed,
    )
    return {"evaluated": summary.evaluated, "changed": summary.changed}


def evaluate_when_due(member_ids: set[int], due: dt.datetime) -> None:
    """Schedule an evaluation of ``member_ids`` for just after ``due``.

    An evaluation counts activity up to its own moment, so a purchase that a
    till with a fast clock stamps a few minutes ahead counts only from then.
    The schedule row is written in the caller's transaction, so it exists
    only if the activity it is for was committed.
    """
    if not member_ids:
        return
    Schedule.objects.create(
        name=f"evaluate-at-{due:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:12]}",
        func=EVALUATE_MEMBERS_TASK,
        args=repr(sorted(member_ids)),
        schedule_type=Schedule.ONCE,
        next_run=due + dt.timedelta(seconds=1),
        repeats=1,
    )
    logger.info(
        "scheduled evaluation of %d members at %s", len(member_ids), due.isoformat()
    )


def reevaluate_everyone(version_id: int) -> dict[str, int]:
    """Re-evaluate every member, chunk by chunk, if ``version_id`` is still in effect.

    Running it twice changes nothing more: evaluation writes a tier change
    only where the tier differs. A newer version in effect makes it a no-op.
    When another evaluation job holds the lock, it schedules itself again
    REEVALUATION_RETRY_DELAY later and returns zero counts.
    """
    now = timezone.now()
    in_effect = RuleVersion.objects.in_effect(now)
    if in_effect is None or in_effect.pk != version_id:
        logger.info(
            "skipped re-evaluation for rule version id=%d: not the version in effect",
            version_id,
        )
        return {"evaluated": 0, "changed": 0}
    try:
        with job_lock(EVALUATION_LOCK, evaluation_lock_timeout()):
            logger.info("re-evaluation started for rule version %d", in_effect.number)
            summary, _ = evaluate(
                as_of=now, ladder=Ladder.load(in_effect), keep_changes=False
            )
    except JobBusyError:
        retry_at = now + REEVALUATION_RETRY_DELAY
        _schedule_reevaluation(in_effect, retry_at)
        logger.info(
            "re-evaluation for rule version %d postponed to %s: job lock %s is "
            "held by another run",
            in_effect.number,
            retry_at.isoformat(),
            EVALUATION_LOCK,
        )
        return {"evaluated": 0, "changed": 0}
    logger.info(
        "re-evaluation finished for rule version %d evaluated=%d changed=%d",
        in_effect.number,
        summary.evaluated,
        summary.changed,
    )
    return {"evaluated": summary.evaluated, "changed": summary.changed}


def _review_everyone(as_of: dt.datetime) -> dict[str, int]:
    logger.info("nightly reviews started as_of=%s", as_of.isoformat())
    # Expired overrides end first, so this run reviews the members they held.
    end_expired_overrides(as_of)
    summary, _ = evaluate(as_of=as_of, keep_changes=False)
    warnings = record_review_warnings(as_of)
    counts = {
        "evaluated": summary.evaluated,
        "promoted": summary.promoted,
        "demoted": summary.demoted,
        "initial": summary.initial,
        "renewed": summary.renewed,
        "in_grace": summary.in_grace,
        "warnings": warnings,
    }
    logger.info(
        "nightly reviews finished as_of=%s evaluated=%d promoted=%d demoted=%d "
        "initial=%d renewed=%d in_grace=%d warnings=%d",
        as_of.isoformat(),
        *counts.values(),
    )
    return counts


def run_nightly_reviews(as_of: dt.datetime | None = None) -> dict[str, int]:
    """End expired overrides, apply the reviews, renewals and grace ends due,
    then record review warnings.

    Evaluates every member as of ``as_of`` (default: now) under the evaluation
    lock and returns the counts of each outcome. A second run changes nothing
    more: members already reviewed have a later review date, and warnings
    are unique per member and review date. Returns {"skipped": 1} when
    another evaluation job holds the lock, and {"evaluated": 0} when no rule
    version is in effect.
    """
    as_of = as_of or timezone.now()
    try:
        with job_lock(EVALUATION_LOCK, evaluation_lock_timeout()):
            return _review_everyone(as_of)
    except JobBusyError:
        logger.info(
            "nightly reviews skipped: job lock %s is held by another run",
            EVALUATION_LOCK,
        )
        return {"skipped": 1}
    except LadderError as error:
        logger.warning("nightly reviews skipped: %s", error)
        return {"evaluated": 0}
