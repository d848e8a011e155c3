"""Issue tier benefits from committed tier changes, exactly once per tier period.

Tier period
    The stretch of one member's time in one tier that benefits are counted
    against, stored as a TierPeriod row unique on (member, tier, ends_at).

    * A change into a tier with reviews ("N months" or "calendar year"
      validity) opens a period that ends at the review date the change set
      (TierChange.review_at). For a calendar-year tier that is the next
      1 January, so the period is the calendar year.
    * A change into a tier without reviews ("continuous") opens a period that
      ends at the next 1 January 00:00 in the program time zone
      (settings.TIME_ZONE): the calendar year.
    * Reaching a tier again while one of the member's periods of that tier is
      still open at the change's ``as_of`` continues that period. Going up,
      down and up again within a period therefore issues nothing new.
    * A renewal (kept at review) opens the next period, which ends at the new
      review date.

What each change issues
    * Reaching a tier (a promotion, an upward override, or a first evaluation
      into a tier above the version's base tier) issues its welcome and
      ongoing benefits.
    * Any other change into a tier (a demotion, a first evaluation into the
      base tier, a renewal) issues its ongoing benefits only.
    * Leaving a tier ends its ongoing grants (status "ended"). Welcome gifts
      and pool choices stay. Coming back within the same period resumes the
      ended ongoing grants instead of issuing new ones.
    * Grace periods and overrides that keep the tier change nothing.
    * A tier without benefits and pools gets no period at all.

The unique constraint on Grant (member, benefit, period) enforces "exactly
once" in the database. Each chunk of changes runs in one transaction that
first locks its members' rows (SELECT ... FOR UPDATE, in pk order, like
tiers.evaluation), so concurrent runs handle one member one after the other,
and the second finds the changes already recorded in ProcessedTierChange.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, Min
from django.utils import timezone

from benefits.codes import new_code
from benefits.models import (
    MAX_BENEFIT_DAYS,
    OPEN_STATUSES,
    Benefit,
    BenefitPool,
    Grant,
    ProcessedTierChange,
    TierBenefit,
    TierPeriod,
)
from members.models import Member
from members.notifications import notify
from tiers.metrics import program_zone
from tiers.models import Tier, TierChange, TierRule

logger = logging.getLogger(__name__)

Status = Grant.Status
Origin = Grant.Origin

# Tier changes handled per transaction. Each chunk costs a fixed number of
# lookup queries plus one INSERT per new period and per new grant.
CHUNK_SIZE = 500
# Attempts at a unique code before giving up. A collision of two random
# 60-bit codes is already improbable.
CODE_ATTEMPTS = 5
# Grants waiting for stock that one run of issue_waiting_for_stock() retries.
STOCK_RETRY_LIMIT = 5000


def next_new_year(moment: dt.datetime) -> dt.datetime:
    """Return the next 1 January 00:00 in the program time zone after ``moment``."""
    year = moment.astimezone(program_zone()).year
    return dt.datetime(year + 1, 1, 1, tzinfo=program_zone())


# Stock and activation, shared with pool choices and approvals.


def take_stock(benefit_id: int) -> bool:
    """Take one item of a benefit's stock; return False when none is left.

    The conditional UPDATE never lowers the stock below zero, even when
    several transactions take the last item at once: only one matches.
    """
    updated = Benefit.objects.filter(pk=benefit_id, stock__gt=0).update(
        stock=F("stock") - 1
    )
    return updated == 1


def return_stock(benefit_id: int) -> None:
    """Put one item back into a benefit's stock, if the benefit counts stock."""
    Benefit.objects.filter(pk=benefit_id, stock__isnull=False).update(
        stock=F("stock") + 1
    )


class BenefitDatesError(Exception):
    """Raised when a benefit's deadline or expiry lies outside the datetime range.

    Benefit rows now keep valid_days and approval_days within
    MAX_BENEFIT_DAYS, so only rows written around the model's check
    constraints can cause it. Callers catch it per grant, so one such benefit
    does not stop issuing for other benefits and members.
    """

    def __init__(self, benefit_id: int, error: Exception) -> None:
        super().__init__(
            f"benefit {benefit_id} has a validity or approval deadline too far "
            f"in the future ({error}); set valid days and approval days to at "
            f"most {MAX_BENEFIT_DAYS}"
        )
        self.benefit_id = benefit_id


def issue_fields(benefit: Benefit, now: dt.datetime) -> dict[str, Any]:
    """Return the fields of a grant that leaves the stock check at ``now``.

    A benefit that needs approval waits for it until its deadline. Any other
    grant is issued at once and expires as the benefit's validity sets.
    Raises BenefitDatesError when that deadline or expiry overflows datetime.
    """
    try:
        if benefit.approval_required:
            return {
                "status": Status.AWAITING_APPROVAL,
                "approval_due_at": now + dt.timedelta(days=benefit.approval_days),
            }
        return {
            "status": Status.ISSUED,
            "issued_at": now,
            "expires_at": benefit.expiry_for(now),
        }
    except OverflowError as error:
        raise BenefitDatesError(benefit.pk, error) from error


def activation_fields(benefit: Benefit, now: dt.datetime) -> dict[str, Any]:
    """Take stock if the benefit counts it, and return the grant's fields.

    Call inside a transaction that also saves the grant, so a failed save
    gives the item back. Callers log grants left waiting for stock.
    """
    if benefit.stock is None:
        return issue_fields(benefit, now)
    if not take_stock(benefit.pk):
        return {"status": Status.AWAITING_STOCK}
    return {"stock_taken": True, **issue_fields(benefit, now)}


def notify_issued(grant: Grant) -> None:
    """Queue the "benefit issued" message for a grant that has just been issued."""
    notify(
        grant.member_id,
        "benefit_issued",
        grant.notification_params(),
        key=f"grant-issued:{grant.pk}",
    )


def create_grant(
    *,
    member_id: int,
    benefit: Benefit,
    tier_id: int,
    period: TierPeriod,
    origin: str,
    now: dt.datetime,
    tier_change_id: int | None = None,
    pool: BenefitPool | None = None,
    pool_slot: int | None = None,
) -> Grant:
    """Insert one grant with a fresh code, taking stock and queueing its message.

    Raises IntegrityError, with nothing written, when the member already has
    the benefit in ``period`` or the pool slot is taken. A code that happens
    to exist already is replaced by a new one.
    """
    for _ in range(CODE_ATTEMPTS):
        code = new_code()
        try:
            # The savepoint undoes the stock taken when the insert fails, and
            # keeps the caller's transaction usable.
            with transaction.atomic():
                fields = activation_fields(benefit, now)
                grant = Grant.objects.create(
                    member_id=member_id,
                    benefit=benefit,
                    tier_id=tier_id,
                    period=period,
                    origin=origin,
                    tier_change_id=tier_change_id,
                    pool=pool,
                    pool_slot=pool_slot,
                    code=code,
                    created_at=now,
                    **fields,
                )
        except IntegrityError:
            if Grant.objects.filter(code=code).exists():
                logger.warning("grant code collision; drawing a new code")
                continue
            raise
        if grant.status == Status.ISSUED:
            notify_issued(grant)
        return grant
    raise IntegrityError(
        f"No unused grant code found in {CODE_ATTEMPTS} attempts; check that "
        "benefits.codes draws random codes."
    )


# The issuing sweep.


@dataclass
class _GrantRow:
    """The fields of an existing grant that issuing decisions read."""

    pk: int
    member_id: int
    benefit_id: int
    tier_id: int
    period_id: int
    origin: str
    status: str
    issued_at: dt.datetime | None
    expires_at: dt.datetime | None
    stock_taken: bool


class _Chunk:
    """The data one chunk of changes reads once, kept current as it writes."""

    def __init__(self, changes: Sequence[TierChange], now: dt.datetime) -> None:
        self.now = now
        self.counts: Counter[str] = Counter()
        # Grants left waiting for stock, by benefit id.
        self.out_of_stock: Counter[int] = Counter()
        member_ids = {change.member_id for change in changes}
        tier_ids = {change.to_tier_id for change in changes} | {
            change.from_tier_id for change in changes if change.from_tier_id
        }

        self.ranks = dict(
            Tier.objects.filter(pk__in=tier_ids).values_list("pk", "rank")
        )
        self.base_ranks = self._base_ranks(changes)
        self._load_catalogue(tier_ids)
        self._load_periods(member_ids, tier_ids)
        self._load_grants(member_ids, tier_ids)

    def _load_catalogue(self, tier_ids: set[int]) -> None:
        self.tier_benefits: dict[int, list[TierBenefit]] = defaultdict(list)
        tier_benefits = TierBenefit.objects.filter(tier_id__in=tier_ids)
        for tier_benefit in tier_benefits.select_related("benefit"):
            self.tier_benefits[tier_benefit.tier_id].append(tier_benefit)
        pool_tiers = set(
            BenefitPool.objects.filter(tier_id__in=tier_ids)
            .values_list("tier_id", flat=True)
            .distinct()
        )
        self.tiers_with_benefits = pool_tiers | set(self.tier_benefits)

    def _load_periods(self, member_ids: set[int], tier_ids: set[int]) -> None:
        self.periods: dict[tuple[int, int], list[TierPeriod]] = defaultdict(list)
        periods = TierPeriod.objects.filter(
            member_id__in=member_ids, tier_id__in=tier_ids
        )
        for period in periods:
            self.periods[(period.member_id, period.tier_id)].append(period)

    def _load_grants(self, member_ids: set[int], tier_ids: set[int]) -> None:
        self.grants: dict[tuple[int, int, int], _GrantRow] = {}
        self.ongoing: dict[tuple[int, int], list[_GrantRow]] = defaultdict(list)
        rows = Grant.objects.filter(
            member_id__in=member_ids, tier_id__in=tier_ids
        ).values_list(
            "pk",
            "member_id",
            "benefit_id",
            "tier_id",
            "period_id",
            "origin",
            "status",
            "issued_at",
            "expires_at",
            "stock_taken",
        )
        for values in rows:
            self._remember(_GrantRow(*values))

    @staticmethod
    def _base_ranks(changes: Iterable[TierChange]) -> dict[int | None, int]:
        """Return the base (lowest) tier rank of each rule version of the changes.

        Changes without a version, such as overrides made while no version
        was in effect, use the lowest rank of all tiers.
        """
        version_ids = {change.version_id for change in changes if change.version_id}
        ranks: dict[int | None, int] = {
            row["version_id"]: row["base_rank"]
            for row in TierRule.objects.filter(version_id__in=version_ids)
            .values("version_id")
            .annotate(base_rank=Min("tier__rank"))
        }
        lowest = Tier.objects.aggregate(rank=Min("rank"))["rank"]
        ranks[None] = lowest if lowest is not None else 0
        return ranks

    def _remember(self, row: _GrantRow) -> None:
        self.grants[(row.member_id, row.benefit_id, row.period_id)] = row
        if row.origin == Origin.ONGOING:
            self.ongoing[(row.member_id, row.tier_id)].append(row)

    def reaches(self, change: TierChange) -> bool:
        """Return whether ``change`` reaches its tier, so welcome benefits apply."""
        if change.reason == TierChange.Reason.OPENING:
            # Members placed from an earlier program got its welcome gifts there.
            return False
        to_rank = self.ranks[change.to_tier_id]
        if change.from_tier_id is None:
            base = self.base_ranks.get(change.version_id, self.base_ranks[None])
            return to_rank > base
        return to_rank > self.ranks[change.from_tier_id]

    def handle(self, change: TierChange) -> ProcessedTierChange:
        """Apply one change and return its processing record, not yet saved."""
        record = ProcessedTierChange(change_id=change.pk, processed_at=self.now)
        member_id, from_id, to_id = (
            change.member_id,
            change.from_tier_id,
            change.to_tier_id,
        )
        renewal = change.reason == TierChange.Reason.RENEWAL
        moved = from_id is not None and from_id != to_id
        if moved:
            assert from_id is not None
            self.end_ongoing(member_id, from_id)
        elif from_id is not None and not renewal:
            # A grace period, or an override that keeps the tier.
            return record
        if to_id not in self.tiers_with_benefits:
            return record

        period = self.renewal_period(change) if renewal else self.arrival_period(change)
        record.period = period
        if renewal:
            self.end_ongoing(member_id, to_id, keep_period_id=period.pk)
        reached = self.reaches(change)
        for tier_benefit in self.tier_benefits[to_id]:
            if tier_benefit.mode == TierBenefit.Mode.WELCOME and not reached:
                continue
            if self.grant_once(change, tier_benefit, period):
                record.grants_created += 1
        return record

    def arrival_period(self, change: TierChange) -> TierPeriod:
        """Return the period that a change into a tier, other than a renewal, counts in."""
        periods = self.periods[(change.member_id, change.to_tier_id)]
        open_periods = [
            period
            for period in periods
            if period.starts_at <= change.as_of < period.ends_at
        ]
        if open_periods:
            return max(open_periods, key=lambda period: period.ends_at)
        ends_at = change.review_at
        if ends_at is None or ends_at <= change.as_of:
            ends_at = next_new_year(change.as_of)
        return self._period_ending(change, change.as_of, ends_at)

    def renewal_period(self, change: TierChange) -> TierPeriod:
        """Return the period that a renewal opens, ending at the new review date.

        It starts where the member's last period of the tier ended, so a late
        review job leaves no gap between periods.
        """
        ends_at = change.review_at
        if ends_at is None or ends_at <= change.as_of:
            ends_at = next_new_year(change.as_of)
        earlier_ends = [
            period.ends_at
            for period in self.periods[(change.member_id, change.to_tier_id)]
            if period.ends_at <= change.as_of
        ]
        starts_at = max(earlier_ends) if earlier_ends else change.as_of
        return self._period_ending(change, starts_at, ends_at)

    def _period_ending(
        self, change: TierChange, starts_at: dt.datetime, ends_at: dt.datetime
    ) -> TierPeriod:
        periods = self.periods[(change.member_id, change.to_tier_id)]
        for period in periods:
            if period.ends_at == ends_at:
                return period
        period = TierPeriod.objects.create(
            member_id=change.member_id,
            tier_id=change.to_tier_id,
            starts_at=starts_at,
            ends_at=ends_at,
            opened_by=change,
        )
        periods.append(period)
        self.counts["periods"] += 1
        return period

    def grant_once(
        self, change: TierChange, tier_benefit: TierBenefit, period: TierPeriod
    ) -> bool:
        """Create the grant unless the member has it in ``period``; return whether it did."""
        benefit = tier_benefit.benefit
        existing = self.grants.get((change.member_id, benefit.pk, period.pk))
        if existing is not None:
            if (
                existing.origin == Origin.ONGOING
                and existing.status == Status.ENDED
                and tier_benefit.mode == TierBenefit.Mode.ONGOING
            ):
                self.resume(existing, benefit)
            return False
        if not benefit.is_offered(self.now):
            logger.info(
                "benefit %d not issued for tier change %d: its validity ended at %s",
                benefit.pk,
                change.pk,
                benefit.valid_until.isoformat() if benefit.valid_until else "",
            )
            self.counts["not_offered"] += 1
            return False
        origin = (
            Origin.WELCOME
            if tier_benefit.mode == TierBenefit.Mode.WELCOME
            else Origin.ONGOING
        )
        try:
            grant = create_grant(
                member_id=change.member_id,
                benefit=benefit,
                tier_id=change.to_tier_id,
                period=period,
                origin=origin,
                now=self.now,
                tier_change_id=change.pk,
            )
        except IntegrityError:
            # Only reachable if something wrote grants without the member lock.
            logger.warning(
                "grant of benefit %d to member %d in period %d already exists; "
                "tier change %d issues nothing for it",
                benefit.pk,
                change.member_id,
                period.pk,
                change.pk,
            )
            self.counts["duplicates"] += 1
            return False
        self.counts[grant.status] += 1
        if grant.status == Status.AWAITING_STOCK:
            self.out_of_stock[benefit.pk] += 1
        self._remember(
            _GrantRow(
                grant.pk,
                grant.member_id,
                benefit.pk,
                grant.tier_id,
                period.pk,
                origin,
                grant.status,
                grant.issued_at,
                grant.expires_at,
                grant.stock_taken,
            )
        )
        return True

    # TODO: carry an ongoing benefit over when the new tier offers it too.
    # A step up now ends it and issues it again with a new code and message.
    def end_ongoing(
        self, member_id: int, tier_id: int, keep_period_id: int | None = None
    ) -> None:
        """End the member's open ongoing grants of a tier, except in one period.

        A grant that was never issued gives back the stock it holds. The
        grant then waits for stock again if the member comes back.
        """
        rows = [
            row
            for row in self.ongoing[(member_id, tier_id)]
            if row.status in OPEN_STATUSES and row.period_id != keep_period_id
        ]
        if not rows:
            return
        for row in rows:
            if row.stock_taken and row.issued_at is None:
                released = Grant.objects.filter(
                    pk=row.pk, status=Status.AWAITING_APPROVAL, stock_taken=True
                ).update(stock_taken=False)
                if released:
                    return_stock(row.benefit_id)
                    row.stock_taken = False
        ended = Grant.objects.filter(
            pk__in=[row.pk for row in rows], status__in=OPEN_STATUSES
        ).update(status=Status.ENDED, ended_at=self.now)
        for row in rows:
            row.status = Status.ENDED
        self.counts["ended"] += ended

    def resume(self, row: _GrantRow, benefit: Benefit) -> None:
        """Give back an ongoing grant that ended when the member left the tier."""
        if row.issued_at is not None:
            if row.expires_at is not None and row.expires_at <= self.now:
                return
            resumed = Grant.objects.filter(pk=row.pk, status=Status.ENDED).update(
                status=Status.ISSUED, ended_at=None
            )
            if resumed:
                row.status = Status.ISSUED
                self.counts["resumed"] += 1
            return
        with transaction.atomic():
            fields = activation_fields(benefit, self.now)
            resumed = Grant.objects.filter(pk=row.pk, status=Status.ENDED).update(
                ended_at=None, **fields
            )
            if not resumed:
                # Roll the stock back: the grant changed since it was read.
                transaction.set_rollback(True)
                return
        row.status = fields["status"]
        row.stock_taken = fields.get("stock_taken", False)
        self.counts["resumed"] += 1
        if row.status == Status.AWAITING_STOCK:
            self.out_of_stock[benefit.pk] += 1
        if row.status == Status.ISSUED:
            notify_issued(Grant.objects.select_related("benefit").get(pk=row.pk))


def _handle_changes(
    chunk: _Chunk, changes: list[TierChange], held_members: set[int]
) -> list[ProcessedTierChange]:
    """Handle each change in a savepoint and return the records of those handled.

    A change that fails with BenefitDatesError is rolled back and left
    unhandled, so a later run retries it once staff fix the benefit. Its
    member is added to ``held_members``, and their later changes wait too,
    because handling them first would apply the member's changes out of
    order. Other members are not affected.
    """
    records = []
    for change in changes:
        if change.member_id in held_members:
            chunk.counts["held_back"] += 1
            continue
        counts = chunk.counts.copy()
        out_of_stock = chunk.out_of_stock.copy()
        try:
            with transaction.atomic():
                records.append(chunk.handle(change))
        except BenefitDatesError as error:
            # The savepoint undid the change's rows, so undo its counts too.
            # The chunk's cached rows of this member are now stale, but no
            # later change of the member is handled in this run.
            chunk.counts = counts
            chunk.out_of_stock = out_of_stock
            chunk.counts["failed"] += 1
            held_members.add(change.member_id)
            logger.error(
                "tier change %d of member %d not handled: %s; it is retried on "
                "the next run, and the member's later changes wait for it",
                change.pk,
                change.member_id,
                error,
            )
    return records


def _process_chunk(
    change_ids: list[int], member_ids: list[int], held_members: set[int]
) -> Counter[str]:
    now = timezone.now()
    with transaction.atomic():
        # Lock first, then read what is still unhandled, so a run that waited
        # for the lock reads the records of the run that held it.
        locked = Member.objects.select_for_update().filter(pk__in=member_ids)
        list(locked.order_by("pk").values_list("pk", flat=True))
        changes = list(
            TierChange.objects.filter(
                pk__in=change_ids, benefit_processing__isnull=True
            ).order_by("member_id", "pk")
        )
        if not changes:
            return Counter()
        chunk = _Chunk(changes, now)
        records = _handle_changes(chunk, changes, held_members)
        ProcessedTierChange.objects.bulk_create(records)
    for benefit_id, waiting in sorted(chunk.out_of_stock.items()):
        logger.warning(
            "benefit %d is out of stock: %d grants from tier changes %d to %d "
            "wait for stock; raise the stock to issue them",
            benefit_id,
            waiting,
            min(change_ids),
            max(change_ids),
        )
    chunk.counts["changes"] += len(records)
    chunk.counts["grants"] += sum(record.grants_created for record in records)
    return chunk.counts


def issue_for_tier_changes() -> dict[str, int]:
    """Issue the benefits of every committed tier change not handled yet.

    Safe to run at any time and any number of times, also concurrently:
    handled changes are recorded in ProcessedTierChange in the same
    transaction as their grants. Returns counts of changes, periods, grants
    by status, ended and resumed ongoing grants, and of changes that failed
    or were held back behind a failed change of the same member. Those stay
    unhandled and are retried on the next run.
    """
    logger.info("benefit issuing started")
    totals: Counter[str] = Counter()
    held_members: set[int] = set()
    # Failed changes stay unhandled, so each query starts after the last
    # chunk instead of at the first unhandled change.
    after_pk = 0
    while True:
        pending = list(
            TierChange.objects.filter(benefit_processing__isnull=True, pk__gt=after_pk)
            .order_by("pk")
            .values_list("pk", "member_id")[:CHUNK_SIZE]
        )
        if not pending:
            break
        change_ids = [change_id for change_id, _ in pending]
        member_ids = sorted({member_id for _, member_id in pending})
        after_pk = change_ids[-1]
        counts = _process_chunk(change_ids, member_ids, held_members)
        totals.update(counts)
        if not counts["changes"]:
            # Another run handled this chunk meanwhile, or every change in it
            # failed or was held back.
            continue
        logger.info(
            "benefit issuing chunk done: tier changes %d to %d, handled=%d grants=%d",
            change_ids[0],
            change_ids[-1],
            counts["changes"],
            counts["grants"],
        )
    logger.info(
        "benefit issuing finished: %s",
        " ".join(f"{name}={count}" for name, count in sorted(totals.items()))
        or "nothing to do",
    )
    return dict(totals)


class _StockChanged(Exception):
    """Raised inside a savepoint to give back stock for a grant that changed."""


def issue_waiting_for_stock(now: dt.datetime | None = None) -> dict[str, int]:
    """Issue grants that wait for stock, oldest first, while stock lasts.

    Runs after staff raise a benefit's stock, and on its schedule. A grant
    that changed status meanwhile (ended, say) is skipped and its item given
    back, so running it concurrently never issues a grant twice.
    """
    now = now or timezone.now()
    logger.info("stock retry started")
    waiting = (
        Grant.objects.filter(status=Status.AWAITING_STOCK)
        .select_related("benefit")
        .order_by("created_at", "pk")[:STOCK_RETRY_LIMIT]
    )
    out_of_stock: set[int] = set()
    # Benefits whose deadline or expiry overflows datetime: their grants keep
    # waiting, and are retried once staff fix the benefit.
    invalid_dates: set[int] = set()
    counts: Counter[str] = Counter()
    issued_ids: list[int] = []
    for grant in waiting:
        if grant.benefit_id in out_of_stock or grant.benefit_id in invalid_dates:
            continue
        try:
            with transaction.atomic():
                if not take_stock(grant.benefit_id):
                    out_of_stock.add(grant.benefit_id)
                    continue
                fields = {"stock_taken": True, **issue_fields(grant.benefit, now)}
                updated = Grant.objects.filter(
                    pk=grant.pk, status=Status.AWAITING_STOCK
                ).update(**fields)
                if not updated:
                    raise _StockChanged
                for name, value in fields.items():
                    setattr(grant, name, value)
                if grant.status == Status.ISSUED:
                    notify_issued(grant)
        except _StockChanged:
            counts["skipped"] += 1
            continue
        except BenefitDatesError as error:
            # The savepoint gave the stock item back.
            invalid_dates.add(grant.benefit_id)
            counts["failed"] += 1
            logger.error(
                "grant %d of member %d still waits for stock: %s",
                grant.pk,
                grant.member_id,
                error,
            )
            continue
        counts[grant.status] += 1
        issued_ids.append(grant.pk)
    logger.info(
        "stock retry finished: grants=%s still_out_of_stock_benefits=%s %s",
        issued_ids[:50],
        sorted(out_of_stock),
        " ".join(f"{name}={count}" for name, count in sorted(counts.items())),
    )
    return dict(counts)
