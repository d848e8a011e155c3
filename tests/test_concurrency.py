"""Concurrent evaluations of one member record each tier change once.

Each test member starts in Bronze with ¥999 of net spend, ¥1 short of
Silver, so any further purchase promotes it.
"""

from __future__ import annotations

import datetime as dt
import os
import threading

import pytest
from django.db import connection
from django.utils import timezone

from members.models import Member
from tests.conftest import local, make_member, record
from tiers import evaluation as evaluation_module
from tiers.evaluation import STALE_RETRY_ROUNDS, evaluate
from tiers.models import TierChange

ON_POSTGRESQL = os.environ.get("DATABASE_URL", "").startswith("postgres")
THREADS = 50


def bronze_member(store, external_id: str, when: dt.datetime) -> Member:
    """Place a new member in Bronze as of ``when`` with ¥999 spent a day before."""
    member = make_member(store, external_id)
    record(member, store, "purchase", when - dt.timedelta(days=1), "999")
    evaluate([member.pk], as_of=when)
    member.refresh_from_db()
    return member


def promotions(member: Member) -> list[TierChange]:
    return list(
        TierChange.objects.filter(
            member=member, reason=TierChange.Reason.PROMOTION
        ).select_related("from_tier", "to_tier")
    )


def race_once(monkeypatch, other_evaluator) -> list[int]:
    """Run ``other_evaluator`` right after the first evaluation of a chunk.

    This is the moment between computing a decision and writing it, where a
    concurrent request can commit its own decision. Returns a list that
    counts the calls of _evaluate_chunk made outside ``other_evaluator``.
    """
    real_evaluate_chunk = evaluation_module._evaluate_chunk
    calls: list[int] = []
    inside_other = False

    def evaluate_chunk_then_race(*args, **kwargs):
        nonlocal inside_other
        result = real_evaluate_chunk(*args, **kwargs)
        if inside_other:
            return result
        calls.append(1)
        if len(calls) == 1:
            inside_other = True
            try:
                other_evaluator()
            finally:
                inside_other = False
        return result

    monkeypatch.setattr(evaluation_module, "_evaluate_chunk", evaluate_chunk_then_race)
    return calls


def test_stale_promotion_not_written_twice(ladder, store, monkeypatch):
    as_of = local(2024, 6, 30)
    member = bronze_member(store, "S-1", as_of)
    record(member, store, "purchase", as_of - dt.timedelta(hours=1), "1")
    race_once(monkeypatch, lambda: evaluate([member.pk], as_of=as_of))

    summary, changes = evaluate([member.pk], as_of=as_of)

    (promotion,) = promotions(member)
    assert promotion.from_tier == ladder["bronze"]
    assert promotion.to_tier == ladder["silver"]
    # The other evaluator wrote the promotion, so this call wrote nothing and
    # its re-evaluation found the member already in Silver.
    assert summary.promoted == 0
    assert changes == []
    member.refresh_from_db()
    assert member.tier == ladder["silver"]


def test_stale_skip_reevaluates_with_new_record(ladder, store, monkeypatch):
    as_of = local(2024, 6, 30)
    member = bronze_member(store, "S-2", local(2024, 6, 1))
    for day in range(10, 16):
        record(member, store, "purchase", local(2024, 6, day), "1000")

    # The other evaluator decides as of 12 June, from three of the six orders,
    # and writes Silver; this call decided Gold from Bronze.
    race_once(monkeypatch, lambda: evaluate([member.pk], as_of=local(2024, 6, 12)))
    summary, changes = evaluate([member.pk], as_of=as_of)

    steps = [(p.from_tier.name, p.to_tier.name) for p in reversed(promotions(member))]
    assert steps == [("Bronze", "Silver"), ("Silver", "Gold")]
    assert summary.promoted == 1
    (change,) = changes
    assert change.previous_tier_id == ladder["silver"].pk
    assert change.tier.id == ladder["gold"].pk
    member.refresh_from_db()
    assert member.tier == ladder["gold"]


def test_stale_rounds_are_capped(ladder, store, monkeypatch):
    as_of = local(2024, 6, 30)
    member = bronze_member(store, "S-3", as_of)
    record(member, store, "purchase", as_of - dt.timedelta(hours=1), "1")
    real_evaluate_chunk = evaluation_module._evaluate_chunk
    calls = 0

    def evaluate_chunk_then_move_tier(*args, **kwargs):
        # Every decision goes stale: the stored tier moves after each read.
        nonlocal calls
        result = real_evaluate_chunk(*args, **kwargs)
        calls += 1
        moved_to = ladder["gold"] if calls % 2 else ladder["platinum"]
        Member.objects.filter(pk=member.pk).update(tier=moved_to)
        return result

    monkeypatch.setattr(
        evaluation_module, "_evaluate_chunk", evaluate_chunk_then_move_tier
    )

    summary, _ = evaluate([member.pk], as_of=as_of)

    assert calls == 1 + STALE_RETRY_ROUNDS
    assert summary.changed == 0
    assert promotions(member) == []


# The in-memory SQLite test database fails a concurrent writer at once with
# "database table is locked" instead of waiting, and ignores
# select_for_update(), so the race runs on PostgreSQL only.
@pytest.mark.skipif(not ON_POSTGRESQL, reason="needs DATABASE_URL=postgres://...")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_events_promote_once(ladder, store):
    now = timezone.now()
    member = bronze_member(store, "RACE", now - dt.timedelta(minutes=5))
    assert member.tier == ladder["bronze"]
    start = threading.Barrier(THREADS, timeout=30)
    errors: list[BaseException] = []

    def record_and_evaluate(number: int) -> None:
        try:
            start.wait()
            record(
                member,
                store,
                "purchase",
                now - dt.timedelta(minutes=1),
                "1",
                f"R-{number}",
            )
            evaluate([member.pk])
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            connection.close()

    threads = [
        threading.Thread(target=record_and_evaluate, args=(number,))
        for number in range(THREADS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert not any(thread.is_alive() for thread in threads)
    (promotion,) = promotions(member)
    assert promotion.from_tier == ladder["bronze"]
    assert promotion.to_tier == ladder["silver"]
    member.refresh_from_db()
    assert member.tier == ladder["silver"]
    assert member.activities.count() == 1 + THREADS


@pytest.mark.skipif(not ON_POSTGRESQL, reason="needs DATABASE_URL=postgres://...")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_member_lock_ignores_open_activity_insert(ladder, store):
    """An evaluation can lock a member while another transaction adds activity.

    Inserting an activity takes a KEY SHARE lock on its member (the foreign
    key check). Two event batches that each hold such locks and then wait
    for FOR UPDATE on the other's members deadlock, so the evaluation locks
    with FOR NO KEY UPDATE, which does not wait for KEY SHARE.
    """
    now = timezone.now()
    member = bronze_member(store, "LOCK", now - dt.timedelta(minutes=5))
    other = connection.copy()
    try:
        with other.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute(
                "SELECT 1 FROM members_member WHERE id = %s FOR KEY SHARE",
                [member.pk],
            )
            record(member, store, "purchase", now - dt.timedelta(minutes=1), "1")
            with connection.cursor() as own:
                own.execute("SET lock_timeout = '2s'")
            summary, _ = evaluate([member.pk])
            cursor.execute("ROLLBACK")
    finally:
        other.close()
        with connection.cursor() as own:
            own.execute("RESET lock_timeout")

    member.refresh_from_db()
    assert summary.promoted == 1
    assert member.tier == ladder["silver"]
