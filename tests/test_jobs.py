"""Background jobs: the job lock, the nightly reviews, their schedule, and
evaluation runs that are killed half way."""

from __future__ import annotations

import ast
import datetime as dt
import importlib
import os
import signal
import subprocess
import sys
import threading
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from django.apps import apps
from django.conf import settings
from django.db import connection
from django.db.models import QuerySet
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.models import OrmQ, Schedule
from django_q.scheduler import scheduler
from django_q.signing import SignedPackage

from members.models import Member
from tests.conftest import local, make_member, publish_spec, record, standard_spec
from tiers import evaluation
from tiers.evaluation import evaluate
from tiers.jobs import (
    EVALUATION_LOCK,
    REEVALUATION_RETRY_DELAY,
    JobBusyError,
    evaluation_lock_timeout,
    job_lock,
    reevaluate_everyone,
    run_nightly_reviews,
)
from tiers.models import JobLock, ReviewWarning, TierChange, Validity

ON_POSTGRESQL = os.environ.get("DATABASE_URL", "").startswith("postgres")
schedule_migration = importlib.import_module(
    "tiers.migrations.0007_schedule_nightly_reviews"
)


def publish_yearly_gold(tiers, grace_days=0):
    """Publish the standard ladder with Gold reviewed 12 months after reaching it."""
    spec = standard_spec(tiers)
    gold = spec.tiers[2]
    gold.validity = Validity.MONTHS
    gold.validity_months = 12
    gold.grace_days = grace_days
    publish_spec(spec)


def six_orders(member, store, year, month, first_day):
    """Record six orders of ¥1,000 on six days in a row from ``first_day``."""
    for day in range(first_day, first_day + 6):
        record(member, store, "purchase", local(year, month, day), "1000")


# Job lock


def test_lock_held_then_released(db):
    with job_lock("report", timeout=60):
        lock = JobLock.objects.get(name="report")
        assert lock.running is True
        assert lock.token != ""

    lock.refresh_from_db()
    assert lock.running is False
    assert lock.token == ""


def test_lock_busy_while_held(db):
    with job_lock("report", timeout=60):
        with pytest.raises(JobBusyError, match="'report' is held by another run"):
            with job_lock("report", timeout=60):
                pass

        assert JobLock.objects.get(name="report").running is True


def test_lock_names_independent(db):
    with job_lock("report", timeout=60), job_lock("export", timeout=60):
        assert JobLock.objects.filter(running=True).count() == 2


def test_lock_free_again_after_release(db):
    with job_lock("report", timeout=60):
        pass

    with job_lock("report", timeout=60):
        assert JobLock.objects.get(name="report").running is True
    assert JobLock.objects.count() == 1


def test_lock_released_after_error(db):
    with pytest.raises(RuntimeError), job_lock("report", timeout=60):
        raise RuntimeError("job failed")

    assert JobLock.objects.get(name="report").running is False


def test_expired_lock_taken_over(db, caplog):
    JobLock.objects.create(
        name="report",
        running=True,
        locked_at=timezone.now() - dt.timedelta(seconds=61),
        token="killed-run",
    )

    with job_lock("report", timeout=60):
        lock = JobLock.objects.get(name="report")
        assert lock.running is True
        assert lock.token != "killed-run"

    assert "job lock report taken over" in caplog.text


def test_unexpired_lock_stays_busy(db):
    JobLock.objects.create(
        name="report",
        running=True,
        locked_at=timezone.now() - dt.timedelta(seconds=50),
        token="slow-run",
    )

    with pytest.raises(JobBusyError), job_lock("report", timeout=60):
        pass

    assert JobLock.objects.get(name="report").token == "slow-run"


def test_lock_insert_race_lost(db, monkeypatch):
    JobLock.objects.create(
        name="report", running=True, locked_at=timezone.now(), token="winner"
    )
    # As if the winner inserted the first row just after this run found none.
    monkeypatch.setattr(QuerySet, "exists", lambda queryset: False)

    with pytest.raises(JobBusyError), job_lock("report", timeout=60):
        pass

    monkeypatch.undo()
    assert JobLock.objects.get(name="report").token == "winner"


def test_release_keeps_successor_lock(db, caplog):
    with job_lock("report", timeout=60):
        # Another run takes the lock over, as if this run outlived its timeout.
        JobLock.objects.filter(name="report").update(token="successor")

    lock = JobLock.objects.get(name="report")
    assert lock.running is True
    assert lock.token == "successor"
    assert "was taken over by another run" in caplog.text


def _in_thread(target):
    """Run ``target`` in a thread with its own database connection."""

    def run():
        try:
            target()
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_lock_busy_across_connections():
    lock_taken = threading.Event()
    finished = threading.Event()

    def hold():
        with job_lock("report", timeout=60):
            lock_taken.set()
            finished.wait(timeout=10)

    thread = _in_thread(hold)
    assert lock_taken.wait(timeout=10)
    try:
        with pytest.raises(JobBusyError), job_lock("report", timeout=60):
            pass
    finally:
        finished.set()
        thread.join(timeout=10)

    with job_lock("report", timeout=60):
        assert JobLock.objects.get(name="report").running is True


# The in-memory SQLite test database fails a concurrent writer at once with
# "database table is locked" instead of waiting, so the race runs on
# PostgreSQL only.
@pytest.mark.skipif(not ON_POSTGRESQL, reason="needs DATABASE_URL=postgres://...")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_lock_race_has_one_winner():
    start = threading.Barrier(2, timeout=10)
    tried = threading.Barrier(2, timeout=10)
    outcomes: list[str] = []

    def contend():
        start.wait()
        try:
            with job_lock("report", timeout=60):
                outcomes.append("acquired")
                tried.wait()
        except JobBusyError:
            outcomes.append("busy")
            tried.wait()

    threads = [_in_thread(contend) for _ in range(2)]
    for thread in threads:
        thread.join(timeout=20)

    assert sorted(outcomes) == ["acquired", "busy"]


# Nightly reviews

NIGHT = local(2025, 5, 31, 12)


def nightly_members(tiers, store):
    """Three Gold members on the night of 31 May 2025, 30 days before the
    reviews of two of them.

    "due" reached Gold on 31 May 2024 and has no orders since, so its review
    is due and fails. "risk" reached Gold on 30 June 2024 and refunded
    ¥1,800 since, so it misses ¥800. "safe" reached Gold on 30 June 2024.
    """
    publish_yearly_gold(tiers)
    due = make_member(store, "due")
    six_orders(due, store, 2024, 5, 25)
    evaluate([due.pk], as_of=local(2024, 5, 31, 12))
    risk = make_member(store, "risk")
    safe = make_member(store, "safe")
    for member in (risk, safe):
        six_orders(member, store, 2024, 6, 25)
    evaluate([risk.pk, safe.pk], as_of=local(2024, 6, 30, 12))
    record(risk, store, "refund", local(2024, 12, 1), "-1800")
    return due, risk, safe


def stored_tiers():
    return list(
        Member.objects.order_by("pk").values_list(
            "pk", "tier__name", "tier_since", "review_at", "grace_until"
        )
    )


def test_nightly_reviews_counts(tiers, store):
    due, risk, _ = nightly_members(tiers, store)

    counts = run_nightly_reviews(NIGHT)

    assert counts == {
        "evaluated": 3,
        "promoted": 0,
        "demoted": 1,
        "initial": 0,
        "renewed": 0,
        "in_grace": 0,
        "warnings": 1,
    }
    due.refresh_from_db()
    assert due.tier.name == "Bronze"
    assert ReviewWarning.objects.get().member == risk
    assert JobLock.objects.get(name=EVALUATION_LOCK).running is False


def test_nightly_reviews_idempotent(tiers, store):
    nightly_members(tiers, store)
    run_nightly_reviews(NIGHT)
    tiers_after_first = stored_tiers()
    changes = TierChange.objects.count()
    warnings = ReviewWarning.objects.count()

    for as_of in (NIGHT, NIGHT + dt.timedelta(hours=1)):
        counts = run_nightly_reviews(as_of)

        assert counts["demoted"] == 0
        assert counts["warnings"] == 0
        assert stored_tiers() == tiers_after_first
        assert TierChange.objects.count() == changes
        assert ReviewWarning.objects.count() == warnings


def test_nightly_reviews_log_counts_only(tiers, store, caplog):
    nightly_members(tiers, store)
    caplog.set_level("INFO", logger="tiers.jobs")

    run_nightly_reviews(NIGHT)

    assert "nightly reviews started as_of=2025-05-31T12:00:00+08:00" in caplog.text
    assert "demoted=1 initial=0 renewed=0 in_grace=0 warnings=1" in caplog.text
    for name in Member.objects.values_list("name", flat=True):
        assert name not in caplog.text


def test_nightly_reviews_skip_when_busy(tiers, store, caplog):
    nightly_members(tiers, store)
    caplog.set_level("INFO", logger="tiers.jobs")
    changes = TierChange.objects.count()

    with job_lock(EVALUATION_LOCK, timeout=60):
        counts = run_nightly_reviews(NIGHT)

    assert counts == {"skipped": 1}
    assert TierChange.objects.count() == changes
    assert ReviewWarning.objects.count() == 0
    assert "nightly reviews skipped: job lock tier-evaluation is held" in caplog.text


def test_nightly_reviews_without_rules(db, caplog):
    counts = run_nightly_reviews(NIGHT)

    assert counts == {"evaluated": 0}
    assert "nightly reviews skipped: No published rule version" in caplog.text
    assert JobLock.objects.get(name=EVALUATION_LOCK).running is False


def test_reevaluation_postponed_when_busy(tiers):
    version = publish_spec(standard_spec(tiers))

    with job_lock(EVALUATION_LOCK, timeout=60):
        before = timezone.now()
        counts = reevaluate_everyone(version.pk)

    assert counts == {"evaluated": 0, "changed": 0}
    schedule = Schedule.objects.get(name=f"reevaluate-v{version.number}")
    assert schedule.func == "tiers.jobs.reevaluate_everyone"
    assert schedule.args == repr(version.pk)
    assert schedule.schedule_type == Schedule.ONCE
    assert schedule.repeats == 1
    assert schedule.next_run >= before + REEVALUATION_RETRY_DELAY


# Task timeouts


def timeout_option(schedule: Schedule) -> int:
    return ast.literal_eval(schedule.kwargs)["q_options"]["timeout"]


@pytest.mark.parametrize("name", ["nightly-reviews", "member-outlooks"])
def test_nightly_evaluation_has_long_timeout(db, name):
    schedule = Schedule.objects.get(name=name)

    assert timeout_option(schedule) == settings.CRM_EVALUATION_TASK_TIMEOUT
    assert timeout_option(schedule) > settings.Q_CLUSTER["timeout"]


def test_postponed_reevaluation_has_long_timeout(tiers):
    version = publish_spec(standard_spec(tiers))

    with job_lock(EVALUATION_LOCK, timeout=60):
        reevaluate_everyone(version.pk)

    schedule = Schedule.objects.get(name=f"reevaluate-v{version.number}")
    assert timeout_option(schedule) == settings.CRM_EVALUATION_TASK_TIMEOUT


# django-q2's scheduler closes the database connection when it finishes,
# which a test inside a transaction cannot survive on PostgreSQL.
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_scheduler_queues_task_with_timeout(settings):
    settings.CRM_EVALUATION_TASK_TIMEOUT = 7200
    migration = importlib.import_module(
        "tiers.migrations.0015_long_evaluation_timeouts"
    )
    migration.set_timeouts(apps, None)
    Schedule.objects.exclude(name="nightly-reviews").delete()
    Schedule.objects.update(next_run=timezone.now() - dt.timedelta(minutes=1))

    scheduler(broker=get_broker())

    queued = [SignedPackage.loads(row.payload) for row in OrmQ.objects.all()]
    assert [task["func"] for task in queued] == ["tiers.jobs.run_nightly_reviews"]
    assert queued[0]["timeout"] == 7200


def test_evaluation_lock_outlasts_task_timeout(settings):
    settings.CRM_EVALUATION_TASK_TIMEOUT = 7200

    assert evaluation_lock_timeout() == 7200


# Schedule


def test_migration_schedules_nightly_reviews(db):
    schedule = Schedule.objects.get(name="nightly-reviews")

    assert schedule.func == "tiers.jobs.run_nightly_reviews"
    assert schedule.schedule_type == Schedule.DAILY
    assert schedule.repeats == -1
    local_run = schedule.next_run.astimezone(ZoneInfo(settings.TIME_ZONE))
    assert (local_run.hour, local_run.minute, local_run.second) == (2, 0, 0)


def test_schedule_first_run_is_next_two_am():
    first_run = schedule_migration.first_run

    assert first_run(local(2025, 3, 1, 1, 59)) == local(2025, 3, 1, 2)
    assert first_run(local(2025, 3, 1, 2)) == local(2025, 3, 2, 2)
    assert first_run(local(2025, 12, 31, 23)) == local(2026, 1, 1, 2)
    # 20:00 UTC on 28 February is 04:00 on 1 March in Shanghai.
    utc_evening = dt.datetime(2025, 2, 28, 20, tzinfo=dt.UTC)
    assert first_run(utc_evening) == local(2025, 3, 2, 2)


def test_schedule_migration_rerun_keeps_row(db):
    moved = local(2030, 1, 1, 3)
    Schedule.objects.filter(name="nightly-reviews").update(next_run=moved)

    schedule_migration.create_schedule(apps, None)

    schedule = Schedule.objects.get(name="nightly-reviews")
    assert schedule.next_run == moved


# Evaluation killed half way

KILLED_AS_OF = local(2025, 1, 31, 12)


def six_members(tiers, store):
    """Six members whose evaluation on 31 January 2025 at noon covers every
    outcome. In pk order, which is the chunk order:

    N1 is new with ¥1,500 of spend (initial Silver). G1 reached Gold a year
    ago and has no orders since (review fails, grace starts). G2 reached Gold
    a year ago and ordered again (renewal). S1 is Silver and now meets Gold
    (promotion). S2 is Silver and its spend left the window (demotion). B1 is
    new with no activity (initial Bronze).
    """
    publish_yearly_gold(tiers, grace_days=10)
    names = ("N1", "G1", "G2", "S1", "S2", "B1")
    members = {name: make_member(store, name) for name in names}
    record(members["N1"], store, "purchase", local(2024, 12, 1), "1500")
    for name in ("G1", "G2"):
        six_orders(members[name], store, 2024, 1, 26)
    for name in ("S1", "S2"):
        record(members[name], store, "purchase", local(2024, 1, 10), "1500")
    placed = [members[name].pk for name in ("G1", "G2", "S1", "S2")]
    evaluate(placed, as_of=local(2024, 1, 31, 12))
    for name in ("G2", "S1"):
        six_orders(members[name], store, 2025, 1, 1)
    return members


def member_states():
    return {
        member.pk: (
            member.tier_id,
            member.tier_since,
            member.review_at,
            member.grace_until,
        )
        for member in Member.objects.all()
    }


def restore(states, last_change_pk):
    """Put the members and their history back as ``states`` recorded them."""
    TierChange.objects.filter(pk__gt=last_change_pk).delete()
    for pk, (tier_id, tier_since, review_at, grace_until) in states.items():
        Member.objects.filter(pk=pk).update(
            tier_id=tier_id,
            tier_since=tier_since,
            review_at=review_at,
            grace_until=grace_until,
        )


def outcome(last_change_pk):
    """Return each member's stored tier and the history rows written since
    ``last_change_pk``, without the wall-clock times that differ per run."""
    tiers = {
        member.name: (member.tier.name, member.review_at, member.grace_until)
        for member in Member.objects.select_related("tier")
    }
    rows = [
        (
            change.member.name,
            change.from_tier.name if change.from_tier else None,
            change.to_tier.name,
            change.reason,
            change.as_of,
            change.review_at,
            change.version_id,
            change.explanation,
        )
        for change in TierChange.objects.filter(pk__gt=last_change_pk).select_related(
            "member", "from_tier", "to_tier"
        )
    ]
    # Sorted by member and reason, so the explanation dicts are never compared.
    changes = sorted(rows, key=lambda row: (row[0], row[3]))
    return tiers, changes


def changed_members(last_change_pk):
    return set(
        TierChange.objects.filter(pk__gt=last_change_pk).values_list(
            "member__name", flat=True
        )
    )


EXPECTED_TIERS = {
    "Member N1": "Silver",
    "Member G1": "Gold",
    "Member G2": "Gold",
    "Member S1": "Gold",
    "Member S2": "Bronze",
    "Member B1": "Bronze",
}
EXPECTED_REASONS = {
    "Member N1": "initial",
    "Member G1": "grace",
    "Member G2": "renewal",
    "Member S1": "promotion",
    "Member S2": "demotion",
    "Member B1": "initial",
}


class SimulatedKill(Exception):
    """Stands in for the process dying after the first chunk committed."""


def test_interrupted_evaluation_matches_one_run(tiers, store, monkeypatch):
    six_members(tiers, store)
    states = member_states()
    last_change_pk = TierChange.objects.order_by("-pk").values_list("pk", flat=True)[0]
    apply_chunk = evaluation._apply
    applied = 0

    def apply_first_chunk_only(*args, **kwargs):
        nonlocal applied
        if applied == 1:
            raise SimulatedKill
        applied += 1
        return apply_chunk(*args, **kwargs)

    monkeypatch.setattr(evaluation, "_apply", apply_first_chunk_only)
    with pytest.raises(SimulatedKill):
        evaluate(as_of=KILLED_AS_OF, chunk_size=2)
    monkeypatch.undo()
    assert changed_members(last_change_pk) == {"Member N1", "Member G1"}

    evaluate(as_of=KILLED_AS_OF, chunk_size=2)
    resumed = outcome(last_change_pk)
    restore(states, last_change_pk)
    evaluate(as_of=KILLED_AS_OF, chunk_size=2)
    single = outcome(last_change_pk)

    assert resumed == single
    tiers_by_name, changes = resumed
    assert {name: tier for name, (tier, _, _) in tiers_by_name.items()} == (
        EXPECTED_TIERS
    )
    assert {change[0]: change[3] for change in changes} == EXPECTED_REASONS
    assert len(changes) == 6


# Kills the process with SIGKILL right after evaluate() commits its first
# chunk, so nothing after that point runs, not even a finally block.
KILL_AFTER_FIRST_CHUNK = """
import datetime as dt
import os
import signal
import sys

import django

django.setup()

from tiers import evaluation

apply_chunk = evaluation._apply


def apply_then_kill(*args, **kwargs):
    result = apply_chunk(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
    return result


evaluation._apply = apply_then_kill
evaluation.evaluate(as_of=dt.datetime.fromisoformat(sys.argv[1]), chunk_size=2)
"""


def _test_database_env():
    """Return the environment of a process that uses the pytest test database."""
    database = connection.settings_dict
    credentials = quote(database["USER"])
    if database["PASSWORD"]:
        credentials += ":" + quote(database["PASSWORD"])
    url = (
        f"postgres://{credentials}@{database['HOST'] or '127.0.0.1'}:"
        f"{database['PORT'] or 5432}/{database['NAME']}"
    )
    return {**os.environ, "DATABASE_URL": url, "DJANGO_SETTINGS_MODULE": "crm.settings"}


def _run(*arguments):
    return subprocess.run(
        [sys.executable, *arguments],
        cwd=settings.BASE_DIR,
        env=_test_database_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _evaluate_command():
    result = _run(
        "manage.py",
        "evaluate_tiers",
        "--chunk-size",
        "2",
        "--as-of",
        KILLED_AS_OF.isoformat(),
    )
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.skipif(not ON_POSTGRESQL, reason="needs DATABASE_URL=postgres://...")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_killed_command_rerun_matches_one_run(tiers, store):
    six_members(tiers, store)
    states = member_states()
    last_change_pk = TierChange.objects.order_by("-pk").values_list("pk", flat=True)[0]

    killed = _run("-c", KILL_AFTER_FIRST_CHUNK, KILLED_AS_OF.isoformat())

    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert changed_members(last_change_pk) == {"Member N1", "Member G1"}

    _evaluate_command()
    resumed = outcome(last_change_pk)
    restore(states, last_change_pk)
    _evaluate_command()
    single = outcome(last_change_pk)

    assert resumed == single
    tiers_by_name, changes = resumed
    assert {name: tier for name, (tier, _, _) in tiers_by_name.items()} == (
        EXPECTED_TIERS
    )
    assert {change[0]: change[3] for change in changes} == EXPECTED_REASONS
