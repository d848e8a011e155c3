"""Dashboard figures against numbers counted by hand on a small program.

"Now" is Wednesday 12 March 2025, 15:00 in Shanghai. The last four weeks
start on the Mondays 17 Feb, 24 Feb, 3 Mar and 10 Mar. Several events sit
just after a local Monday midnight, which is still Sunday in UTC, so a
figure that grouped weeks in UTC would put them in the week before.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from benefits.models import Benefit, Grant, TierPeriod
from members.models import Channel, ImportBatch, ImportKind, Member
from tests.conftest import local, make_member, record
from tiers import dashboard
from tiers.models import Tier, TierChange, TierSnapshot

pytestmark = pytest.mark.django_db

NOW = local(2025, 3, 12, 15, 0)
MONDAYS = [
    dt.date(2025, 2, 17),
    dt.date(2025, 2, 24),
    dt.date(2025, 3, 3),
    dt.date(2025, 3, 10),
]
_codes = itertools.count(1)


@dataclass
class Program:
    """Seven members, one merged away, with the tier history below.

    ==== ======== ===============================================
    name now      history (Shanghai time)
    ==== ======== ===============================================
    A    Gold     Silver 10 Jan, promoted 3 Mar 00:30
    B    Gold     Gold 10 Jan, demoted 24 Feb 07:00, override
                  to Gold 11 Mar
    C    Silver   opening Gold 5 Jan, demoted 18 Feb
    D    Silver   Bronze 10 Jan, promoted 16 Feb 23:30, renewed
                  5 Mar
    E    Bronze   Silver 10 Jan, override down to Bronze 4 Mar
    F    —        no history
    G    Platinum Gold 10 Jan, merge to Platinum 26 Feb
    M    Gold     merged into A; promoted 4 Mar
    ==== ======== ===============================================
    """

    tiers: dict[str, Tier]
    members: dict[str, Member]
    channel: Channel


def change(
    member: Member,
    before: Tier | None,
    after: Tier,
    when: dt.datetime,
    reason: str,
) -> TierChange:
    return TierChange.objects.create(
        member=member,
        from_tier=before,
        to_tier=after,
        changed_at=when,
        as_of=when,
        reason=reason,
        explanation={},
    )


@pytest.fixture
def program(tiers, store) -> Program:
    bronze, silver, gold, platinum = (
        tiers["bronze"],
        tiers["silver"],
        tiers["gold"],
        tiers["platinum"],
    )
    final = {
        "A": gold,
        "B": gold,
        "C": silver,
        "D": silver,
        "E": bronze,
        "F": None,
        "G": platinum,
        "M": gold,
    }
    members = {}
    for name, tier in final.items():
        member = make_member(store, name)
        member.tier = tier
        member.save()
        members[name] = member
    Member.objects.filter(pk=members["M"].pk).update(merged_into=members["A"])

    reason = TierChange.Reason
    a, b, c, d, e, g, m = (members[name] for name in "ABCDEGM")
    change(a, None, silver, local(2025, 1, 10, 10), reason.INITIAL)
    change(a, silver, gold, local(2025, 3, 3, 0, 30), reason.PROMOTION)
    change(b, None, gold, local(2025, 1, 10, 10), reason.INITIAL)
    change(b, gold, silver, local(2025, 2, 24, 7), reason.DEMOTION)
    change(b, silver, gold, local(2025, 3, 11, 9), reason.OVERRIDE)
    change(c, None, gold, local(2025, 1, 5, 9), reason.OPENING)
    change(c, gold, silver, local(2025, 2, 18, 12), reason.DEMOTION)
    change(d, None, bronze, local(2025, 1, 10, 10), reason.INITIAL)
    change(d, bronze, silver, local(2025, 2, 16, 23, 30), reason.PROMOTION)
    change(d, silver, silver, local(2025, 3, 5, 10), reason.RENEWAL)
    change(e, None, silver, local(2025, 1, 10, 10), reason.INITIAL)
    change(e, silver, bronze, local(2025, 3, 4, 10), reason.OVERRIDE)
    change(g, None, gold, local(2025, 1, 10, 10), reason.INITIAL)
    change(g, gold, platinum, local(2025, 2, 26, 10), reason.MERGE)
    change(m, None, silver, local(2025, 1, 10, 10), reason.INITIAL)
    change(m, silver, gold, local(2025, 3, 4, 10), reason.PROMOTION)
    return Program(tiers=tiers, members=members, channel=store)


# Weeks


def test_week_range_starts_at_local_monday():
    span = dashboard.week_range(4, NOW)

    assert list(span.mondays) == MONDAYS
    assert span.start == local(2025, 2, 17)
    assert span.end == local(2025, 3, 17)


def test_week_range_on_monday_just_after_midnight():
    # 00:05 on Monday in Shanghai is still Sunday in UTC.
    span = dashboard.week_range(1, local(2025, 3, 10, 0, 5))

    assert list(span.mondays) == [dt.date(2025, 3, 10)]


@pytest.mark.parametrize("weeks", [0, -1, dashboard.MAX_WEEKS + 1])
def test_week_range_rejects_invalid_weeks(weeks):
    with pytest.raises(ValueError, match="is invalid"):
        dashboard.week_range(weeks, NOW)


def test_every_reason_has_a_trigger():
    assert set(dashboard.TRIGGER_OF_REASON) == set(TierChange.Reason.values)


# Distribution now


def test_distribution_counts_current_tiers(program, django_assert_num_queries):
    tier_labels = dashboard.load_tiers()

    with django_assert_num_queries(1):
        distribution = dashboard.tier_distribution(tier_labels)

    counts = {
        row.tier.name if row.tier else None: row.members for row in distribution.rows
    }
    assert counts == {
        "Bronze": 1,
        "Silver": 2,
        "Gold": 2,
        "Platinum": 1,
        None: 1,
    }
    assert distribution.total == 7
    gold = distribution.rows[2]
    assert gold.share == pytest.approx(2 / 7)


def test_distribution_keeps_empty_tiers(tiers):
    distribution = dashboard.tier_distribution()

    assert [row.tier.name for row in distribution.rows if row.tier] == [
        "Bronze",
        "Silver",
        "Gold",
        "Platinum",
    ]
    assert all(row.members == 0 for row in distribution.rows)
    assert all(row.share is None for row in distribution.rows)
    assert all(row.tier is not None for row in distribution.rows)


# Distribution over time


def snapshot(day: dt.date, tiers: dict[str, Tier], **counts: int) -> None:
    for name, members in counts.items():
        TierSnapshot.objects.create(day=day, tier=tiers[name], members=members)


def test_history_uses_latest_weekly_snapshot(tiers, django_assert_num_queries):
    snapshot(dt.date(2025, 2, 16), tiers, bronze=1, silver=1, gold=1, platinum=1)
    snapshot(dt.date(2025, 2, 20), tiers, bronze=5, silver=4, gold=3, platinum=2)
    snapshot(dt.date(2025, 2, 23), tiers, bronze=6, silver=4, gold=3, platinum=2)
    snapshot(dt.date(2025, 3, 4), tiers, bronze=7, silver=5, gold=3)
    snapshot(dt.date(2025, 3, 11), tiers, bronze=8, silver=5, gold=4, platinum=3)
    tier_labels = dashboard.load_tiers()

    with django_assert_num_queries(1):
        history = dashboard.distribution_history(4, NOW, tier_labels)

    assert [point.monday for point in history.points] == MONDAYS
    assert [point.day for point in history.points] == [
        dt.date(2025, 2, 23),
        None,
        dt.date(2025, 3, 4),
        dt.date(2025, 3, 11),
    ]
    assert history.points[0].members == (6, 4, 3, 2)
    assert history.points[1].members == (None, None, None, None)
    # Platinum has no row on 4 March, so it shows 0.
    assert history.points[2].members == (7, 5, 3, 0)
    assert history.points[3].members == (8, 5, 4, 3)


# Recording and reconstructing snapshots


def stored_snapshot(day: dt.date) -> dict[str, int]:
    return dict(
        TierSnapshot.objects.filter(day=day).values_list("tier__name", "members")
    )


def test_record_snapshot_counts_current_members(program, django_assert_num_queries):
    day = dt.date(2025, 3, 11)

    # Tier ids, members per tier, one INSERT … ON CONFLICT.
    with django_assert_num_queries(3):
        written = dashboard.record_tier_snapshot(day)

    assert written == 4
    assert stored_snapshot(day) == {"Bronze": 1, "Silver": 2, "Gold": 2, "Platinum": 1}


def test_snapshot_twice_replaces_the_day(program):
    day = dt.date(2025, 3, 11)
    dashboard.record_tier_snapshot(day)
    Member.objects.filter(pk=program.members["F"].pk).update(
        tier=program.tiers["platinum"]
    )

    dashboard.record_tier_snapshot(day)

    assert TierSnapshot.objects.filter(day=day).count() == 4
    assert stored_snapshot(day) == {"Bronze": 1, "Silver": 2, "Gold": 2, "Platinum": 2}


def test_record_snapshot_defaults_to_yesterday(program):
    from django.utils import timezone

    yesterday = timezone.localdate() - dt.timedelta(days=1)

    dashboard.record_tier_snapshot()

    assert set(TierSnapshot.objects.values_list("day", flat=True)) == {yesterday}


def test_backfill_rebuilds_days_from_history(program, django_assert_num_queries):
    with django_assert_num_queries(4):
        filled = dashboard.backfill_tier_snapshots(30, today=dt.date(2025, 3, 12))

    assert filled == 30
    assert TierSnapshot.objects.count() == 30 * 4
    assert min(TierSnapshot.objects.values_list("day", flat=True)) == dt.date(
        2025, 2, 10
    )
    # D's promotion at 23:30 on 16 Feb counts on 16 Feb, not the day after.
    assert stored_snapshot(dt.date(2025, 2, 16)) == {
        "Bronze": 0,
        "Silver": 3,
        "Gold": 3,
        "Platinum": 0,
    }
    assert stored_snapshot(dt.date(2025, 2, 17)) == {
        "Bronze": 0,
        "Silver": 3,
        "Gold": 3,
        "Platinum": 0,
    }
    # A's promotion at 00:30 on 3 March (still 2 March in UTC) is not in
    # the count at the end of 2 March.
    assert stored_snapshot(dt.date(2025, 3, 2)) == {
        "Bronze": 0,
        "Silver": 5,
        "Gold": 0,
        "Platinum": 1,
    }
    assert stored_snapshot(dt.date(2025, 3, 3)) == {
        "Bronze": 0,
        "Silver": 4,
        "Gold": 1,
        "Platinum": 1,
    }
    # The last day matches the tiers members hold now.
    assert stored_snapshot(dt.date(2025, 3, 11)) == {
        "Bronze": 1,
        "Silver": 2,
        "Gold": 2,
        "Platinum": 1,
    }


def test_backfill_keeps_recorded_days(program):
    recorded = dt.date(2025, 3, 1)
    snapshot(recorded, program.tiers, gold=99)

    filled = dashboard.backfill_tier_snapshots(30, today=dt.date(2025, 3, 12))
    filled_again = dashboard.backfill_tier_snapshots(30, today=dt.date(2025, 3, 12))

    assert filled == 29
    assert filled_again == 0
    assert stored_snapshot(recorded) == {"Gold": 99}
    assert TierSnapshot.objects.count() == 29 * 4 + 1


def test_backfill_rejects_zero_days(tiers):
    with pytest.raises(ValueError, match="days=0 is invalid"):
        dashboard.backfill_tier_snapshots(0)


# Promotions and downgrades


def test_movements_per_local_week(program, django_assert_num_queries):
    with django_assert_num_queries(1):
        movements = dashboard.tier_movements(4, NOW)

    weeks = {week.monday: week for week in movements.weeks}
    assert list(weeks) == MONDAYS
    counts = dashboard.TriggerCounts
    # C's demotion on 18 Feb; D's promotion on 16 Feb is before the range.
    assert weeks[MONDAYS[0]].promotions == counts()
    assert weeks[MONDAYS[0]].downgrades == counts(automatic=1)
    # B's demotion at 07:00 on Monday 24 Feb and G's merge on 26 Feb.
    assert weeks[MONDAYS[1]].promotions == counts(carried_over=1)
    assert weeks[MONDAYS[1]].downgrades == counts(automatic=1)
    # A's promotion at 00:30 on Monday 3 March and E's override down; M's
    # promotion is left out because M was merged away. D's renewal is no move.
    assert weeks[MONDAYS[2]].promotions == counts(automatic=1)
    assert weeks[MONDAYS[2]].downgrades == counts(manual=1)
    # B's override back up to Gold.
    assert weeks[MONDAYS[3]].promotions == counts(manual=1)
    assert weeks[MONDAYS[3]].downgrades == counts()
    assert movements.promotions == counts(automatic=1, manual=1, carried_over=1)
    assert movements.downgrades == counts(automatic=2, manual=1)
    assert movements.promotions.total == 3


def test_movements_skip_first_tier(program):
    movements = dashboard.tier_movements(12, NOW)

    # The INITIAL and OPENING rows of January have no tier before them, so
    # only D's promotion on 16 Feb joins the moves of the last four weeks.
    assert movements.promotions.total == 4
    assert movements.downgrades.total == 3


# Benefits


def grant(
    member: Member,
    period: TierPeriod,
    benefit: Benefit,
    status: str,
    issued_at: dt.datetime | None,
    redeemed_at: dt.datetime | None = None,
) -> Grant:
    created = issued_at or local(2025, 3, 1)
    return Grant.objects.create(
        member=member,
        benefit=benefit,
        tier=period.tier,
        period=period,
        origin=Grant.Origin.ONGOING,
        status=status,
        code=f"DASH{next(_codes):06d}",
        created_at=created,
        issued_at=issued_at,
        redeemed_at=redeemed_at,
        approval_due_at=local(2025, 3, 20) if issued_at is None else None,
    )


def period(member: Member, tier: Tier) -> TierPeriod:
    return TierPeriod.objects.create(
        member=member,
        tier=tier,
        starts_at=local(2025, 1, 1),
        ends_at=local(2026, 1, 1),
    )


def test_benefits_per_period_tier(program, django_assert_num_queries):
    tiers, members = program.tiers, program.members
    coupon = Benefit.objects.create(name="Coupon", kind="coupon")
    gift = Benefit.objects.create(name="Gift", kind="gift")
    lounge = Benefit.objects.create(name="Lounge", kind="service")
    gold_a = period(members["A"], tiers["gold"])
    silver_c = period(members["C"], tiers["silver"])
    gold_m = period(members["M"], tiers["gold"])
    status = Grant.Status
    grant(
        members["A"],
        gold_a,
        coupon,
        status.REDEEMED,
        local(2025, 3, 1),
        redeemed_at=local(2025, 3, 2),
    )
    # The grant's own tier differs; the period's tier decides.
    g2 = grant(members["A"], gold_a, gift, status.ISSUED, local(2025, 2, 20))
    Grant.objects.filter(pk=g2.pk).update(tier=tiers["silver"])
    # Issued before the range.
    grant(
        members["A"],
        gold_a,
        lounge,
        status.REDEEMED,
        local(2025, 2, 10),
        redeemed_at=local(2025, 2, 11),
    )
    # 00:10 on the first Monday is inside the range although it is Sunday in UTC.
    grant(members["C"], silver_c, coupon, status.EXPIRED, local(2025, 2, 17, 0, 10))
    grant(members["C"], silver_c, gift, status.AWAITING_APPROVAL, None)
    grant(members["M"], gold_m, coupon, status.ISSUED, local(2025, 3, 1))
    span = dashboard.week_range(4, NOW)
    tier_labels = dashboard.load_tiers()

    with django_assert_num_queries(1):
        use = dashboard.benefit_use(span.start, span.end, tier_labels)

    rows = {row.tier.name: row for row in use.rows}
    assert list(rows) == ["Bronze", "Silver", "Gold", "Platinum"]
    assert (rows["Gold"].issued, rows["Gold"].redeemed, rows["Gold"].expired) == (
        2,
        1,
        0,
    )
    assert rows["Gold"].redemption_rate == 0.5
    assert (
        rows["Silver"].issued,
        rows["Silver"].redeemed,
        rows["Silver"].expired,
    ) == (1, 0, 1)
    assert rows["Silver"].redemption_rate == 0
    assert rows["Bronze"].issued == 0
    assert rows["Bronze"].redemption_rate is None
    assert use.issued == 3
    assert use.redeemed == 1
    assert use.expired == 1
    assert use.redemption_rate == pytest.approx(1 / 3)


# Churn


def test_churn_by_tier(program, django_assert_num_queries):
    members, store = program.members, program.channel
    # The 30-day window on 12 March starts at midnight on 11 February.
    record(members["A"], store, "purchase", local(2025, 3, 1), "100")
    record(members["B"], store, "purchase", local(2025, 2, 10, 23, 59), "100")
    record(members["C"], store, "visit", local(2025, 2, 11))
    record(members["E"], store, "opening", local(2025, 3, 1))
    record(members["F"], store, "purchase", local(2025, 3, 13), "100")
    record(members["G"], store, "refund", local(2025, 3, 10), "-20")
    tier_labels = dashboard.load_tiers()

    # Members per tier, then the inactive members per tier.
    with django_assert_num_queries(2):
        churn = dashboard.churn_by_tier(30, NOW, tier_labels)

    assert churn.since == local(2025, 2, 11)
    rows = {row.tier.name if row.tier else None: row for row in churn.rows}
    assert {name: (row.members, row.inactive) for name, row in rows.items()} == {
        # E has only an opening balance, which is not activity.
        "Bronze": (1, 1),
        # C's visit at midnight on 11 Feb is the first moment of the window.
        "Silver": (2, 1),
        # B's purchase a minute before the window does not count.
        "Gold": (2, 1),
        "Platinum": (1, 0),
        # F's purchase is after "now".
        None: (1, 1),
    }
    assert rows["Silver"].share == 0.5
    assert rows["Platinum"].share == 0
    assert churn.members == 7
    assert churn.inactive == 4


def test_churn_days_come_from_setting(program, settings):
    settings.CRM_CHURN_DAYS = 7

    churn = dashboard.churn_by_tier(now=NOW)

    assert churn.days == 7
    assert churn.since == local(2025, 3, 6)


@pytest.mark.parametrize("days", [0, dashboard.MAX_CHURN_DAYS + 1])
def test_churn_rejects_invalid_days(tiers, days):
    with pytest.raises(ValueError, match=f"days={days} is invalid"):
        dashboard.churn_by_tier(days, NOW)


# Import health


def batch(status: str, created: dt.datetime, rows: int, rejected: int) -> ImportBatch:
    created_batch = ImportBatch.objects.create(
        kind=ImportKind.ACTIVITIES,
        status=status,
        file_name=f"{status}.csv",
        total_rows=rows,
        rejected_count=rejected,
        message="Missing column: amount" if status == "refused" else "",
    )
    ImportBatch.objects.filter(pk=created_batch.pk).update(created_at=created)
    return created_batch


def test_import_health(db, django_assert_num_queries):
    status = ImportBatch.Status
    applied = batch(status.APPLIED, local(2025, 3, 10, 8), 100, 5)
    refused = batch(status.REFUSED, local(2025, 3, 3, 0, 5), 0, 0)
    failed = batch(status.FAILED, local(2025, 2, 20), 50, 50)
    batch(status.APPLIED, local(2025, 2, 1), 1000, 1)
    batch(status.ROLLED_BACK, local(2025, 2, 25), 20, 2)

    with django_assert_num_queries(2):
        health = dashboard.import_health(4, NOW)

    weeks = {week.monday: week for week in health.weeks}
    assert list(weeks) == MONDAYS

    def by_status(monday: dt.date) -> dict[str, int]:
        return {
            name: count
            for name, count in zip(health.statuses, weeks[monday].batches, strict=True)
            if count
        }

    assert by_status(MONDAYS[0]) == {"failed": 1}
    assert by_status(MONDAYS[1]) == {"rolled_back": 1}
    # 00:05 on Monday 3 March is the new week in Shanghai.
    assert by_status(MONDAYS[2]) == {"refused": 1}
    assert by_status(MONDAYS[3]) == {"applied": 1}
    assert (weeks[MONDAYS[0]].rows, weeks[MONDAYS[0]].rejected) == (50, 50)
    assert (weeks[MONDAYS[3]].rows, weeks[MONDAYS[3]].rejected) == (100, 5)
    assert health.batches == 4
    assert health.rows == 170
    assert health.rejected == 57
    assert health.rejection_rate == pytest.approx(57 / 170)
    assert health.batches_with_status(status.APPLIED) == 1
    assert [problem.id for problem in health.problems] == [refused.pk, failed.pk]
    assert health.problems[0].message == "Missing column: amount"
    assert applied.pk not in [problem.id for problem in health.problems]


def test_import_health_without_batches(db):
    health = dashboard.import_health(4, NOW)

    assert health.batches == 0
    assert health.rejection_rate is None
    assert health.problems == ()


# The whole dashboard


def test_build_dashboard_query_count(program, django_assert_num_queries):
    # Tiers, distribution, history, movements, benefits, churn, import
    # weeks and problem batches: one query each.
    with django_assert_num_queries(8):
        board = dashboard.build_dashboard(weeks=4, churn_days=30, now=NOW)

    assert board.computed_at == NOW
    assert board.distribution.total == 7
    assert board.movements.promotions.total == 3
    assert board.churn.days == 30
    assert len(board.history.points) == 4


def test_dashboard_queries_ignore_member_count(program, django_assert_num_queries):
    store = program.channel
    for number in range(30):
        member = make_member(store, f"extra-{number}")
        record(member, store, "purchase", local(2025, 3, 1), "10")

    with django_assert_num_queries(8):
        dashboard.build_dashboard(weeks=4, churn_days=30, now=NOW)


def test_cached_dashboard_reuses_figures(program, django_assert_num_queries):
    first = dashboard.cached_dashboard(4, 30)

    with django_assert_num_queries(0):
        second = dashboard.cached_dashboard(4, 30)

    assert second == first
    with django_assert_num_queries(8):
        refreshed = dashboard.cached_dashboard(4, 30, refresh=True)
    assert refreshed.computed_at > first.computed_at


def test_backfill_command_fills_days(tiers):
    out = StringIO()

    call_command("backfill_tier_snapshots", "--days", "3", stdout=out)

    assert "Filled 3 days" in out.getvalue()
    assert TierSnapshot.objects.values("day").distinct().count() == 3


def test_backfill_command_rejects_bad_days(tiers):
    with pytest.raises(CommandError, match="--days 0 is invalid"):
        call_command("backfill_tier_snapshots", "--days", "0")
