"""Opening tiers from an earlier loyalty program, and undoing an import's tiers.

An opening tier places a member as a promotion at the cut-over moment
would. ``tier_since`` is the cut-over moment, and the review date follows
the tier's validity in the rules in effect (see tiers.reviews.next_review).
From then on evaluation treats the tier like any other. A reviewed tier
lasts until its review date, where the retention rules judge it. A
continuous tier is kept only while the rules keep it, so its member needs
an opening balance that meets the tier, or a fixed override, to stay in it.

An opening tier never lowers a member. A member whose stored tier ranks
at or above the opening tier, reached by this program's own activity or
by an earlier import, keeps that tier, its dates and its history.

Each placement writes a TierChange with reason OPENING. The benefits
sweep reads it like any change into a tier, so ongoing benefits follow.
Welcome benefits are meant for members who reach a tier in this program,
and a migrated member already had the welcome gift of the previous
program, so benefits.issuing is to leave them out for reason OPENING.

Rolling back an import puts back the tier fields it changed
(``restore_tiers``): the opening tiers it placed, and the tiers its own
evaluation changed. Imports record both in ImportedMember.previous as
{field: [value before, value the import left]}.
"""
# NOTE: benefits.issuing._Chunk.reaches does not check the reason yet, so
# an opening tier above the base tier still issues its welcome benefits.

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils.translation import gettext_noop

from members.models import Member
from tiers.followups import after_tier_changes
from tiers.ladder import Ladder, TierRuleSet
from tiers.models import TierChange
from tiers.reviews import next_review

logger = logging.getLogger(__name__)

# Members locked and written per round.
CHUNK_SIZE = 500
# Stored in English in the explanation of every history row this module
# writes; the admin translates them when it shows them.
OPENING_NOTE = gettext_noop("Opening tier from the previous program")
ROLLBACK_NOTE = gettext_noop("Opening tier from the previous program rolled back")
IMPORT_ROLLBACK_NOTE = gettext_noop("Tier change of a rolled-back import undone")
# The member fields an opening tier or an evaluation sets, as
# ImportedMember.previous keeps them: {field: [value before, value set]}.
TIER_FIELDS = ("tier", "tier_since", "review_at", "grace_until")
# A member's tier fields in the order of TIER_FIELDS, with the moments as
# ISO 8601 text, the form ImportedMember.previous stores.
TierValues = tuple[int | None, str | None, str | None, str | None]


@dataclass(frozen=True)
class OpeningTier:
    """The tier one line of an opening file gives one member, from ``as_of``."""

    member_id: int
    tier_id: int
    as_of: dt.datetime
    line: int


@dataclass
class PlacementResult:
    """The outcome of placing opening tiers, by member.

    ``previous`` maps the id of each member whose tier was set to the values
    it replaced, in the form ImportedMember.previous stores. ``kept`` maps
    the id of each member left in a tier at or above the opening tier to
    that tier's name.
    """

    previous: dict[int, dict[str, list[Any]]] = field(default_factory=dict)
    kept: dict[int, str] = field(default_factory=dict)


def _chunks(items: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), CHUNK_SIZE):
        yield items[start : start + CHUNK_SIZE]


def _iso(moment: dt.datetime | None) -> str | None:
    # isoformat() keeps microseconds, which DjangoJSONEncoder would cut to
    # milliseconds, so a restored date equals the one replaced.
    return moment.isoformat() if moment is not None else None


def _moment(text: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(text) if text else None


def read_tier_values(member_ids: Sequence[int]) -> dict[int, TierValues]:
    """Return the stored tier fields of ``member_ids``, one query per chunk."""
    values: dict[int, TierValues] = {}
    for chunk in _chunks(sorted(member_ids)):
        rows = Member.objects.filter(pk__in=list(chunk)).values_list(
            "pk", "tier_id", "tier_since", "review_at", "grace_until"
        )
        for pk, tier_id, since, review_at, grace in rows:
            values[pk] = (tier_id, _iso(since), _iso(review_at), _iso(grace))
    return values


def _locked_members(
    member_ids: Sequence[int],
) -> dict[int, tuple[int | None, Any, Any, Any]]:
    """Lock ``member_ids`` in pk order; return their stored tier fields."""
    rows = (
        Member.objects.select_for_update()
        .filter(pk__in=list(member_ids))
        .order_by("pk")
        .values_list("pk", "tier_id", "tier_since", "review_at", "grace_until")
    )
    return {row[0]: row[1:] for row in rows}


def _opening_explanation(
    previous: TierRuleSet | None,
    tier: TierRuleSet,
    as_of: dt.datetime,
    review_at: dt.datetime | None,
    opening: dict[str, Any],
) -> dict[str, Any]:
    return {
        "as_of": as_of.isoformat(),
        "from_tier": previous.name if previous else None,
        "tier": tier.id,
        "tier_name": tier.name,
        "review_at": _iso(review_at),
        "opening": opening,
    }


def place_opening_tiers(
    openings: Sequence[OpeningTier],
    ladder: Ladder,
    *,
    batch_id: int | None,
    now: dt.datetime,
) -> PlacementResult:
    """Set each member's opening tier unless the member's tier ranks as high.

    Every opening tier must be a tier of ``ladder``. A member given twice
    takes the last line. Per chunk of members this costs one locking
    SELECT, one UPDATE per distinct (tier, moment) pair and one INSERT of
    history rows. The follow-up tasks (benefits, messages) are queued once
    the caller's transaction commits.
    """
    by_member = {opening.member_id: opening for opening in openings}
    result = PlacementResult()
    history: list[TierChange] = []
    with transaction.atomic():
        for chunk in _chunks(sorted(by_member)):
            stored = _locked_members(chunk)
            groups: dict[tuple[int, dt.datetime, Any], list[int]] = defaultdict(list)
            for member_id, (tier_id, since, review_at, grace) in stored.items():
                opening = by_member[member_id]
                tier = ladder.by_id(opening.tier_id)
                if tier is None:
                    raise ValueError(
                        f"Tier {opening.tier_id} is not a tier of rule version "
                        f"{ladder.version_number}."
                    )
                current = ladder.by_id(tier_id)
                if current is not None and current.rank >= tier.rank:
                    result.kept[member_id] = current.name
                    continue
                new_review = next_review(tier, opening.as_of)
                groups[(tier.id, opening.as_of, new_review)].append(member_id)
                result.previous[member_id] = {
                    "tier": [tier_id, tier.id],
                    "tier_since": [_iso(since), _iso(opening.as_of)],
                    "review_at": [_iso(review_at), _iso(new_review)],
                    "grace_until": [_iso(grace), None],
                }
                details = {
                    "note": OPENING_NOTE,
                    "batch": batch_id,
                    "line": opening.line,
                }
                history.append(
                    TierChange(
                        member_id=member_id,
                        from_tier_id=tier_id,
                        to_tier_id=tier.id,
                        version_id=ladder.version_id,
                        changed_at=now,
                        as_of=opening.as_of,
                        reason=TierChange.Reason.OPENING,
                        review_at=new_review,
                        explanation=_opening_explanation(
                            current, tier, opening.as_of, new_review, details
                        ),
                    )
                )
            for (tier_id, as_of, review_at), ids in groups.items():
                Member.objects.filter(pk__in=ids).update(
                    tier_id=tier_id,
                    tier_since=as_of,
                    review_at=review_at,
                    grace_until=None,
                )
        TierChange.objects.bulk_create(history, batch_size=2000)
        if history:
            after_tier_changes()
    logger.info(
        "opening tiers placed batch=%s set=%d kept=%d",
        batch_id,
        len(result.previous),
        len(result.kept),
    )
    return result


@dataclass
class RestoreResult:
    """Counts and member ids of a rollback of import tiers."""

    restored: int = 0
    # Members no longer in the tier the import left, which keep the tier they
    # have.
    conflicts: int = 0
    conflicted_members: list[int] = field(default_factory=list)
    # Restored members whose tier itself changed, not only its dates.
    moved_members: set[int] = field(default_factory=set)


def _still_as_left(
    stored: tuple[int | None, Any, Any, Any], previous: Mapping[str, list[Any]]
) -> bool:
    """Return whether the member still has the tier placement the import left.

    The tier and ``tier_since`` are compared, so a review that renewed the
    tier since still counts as the same placement, and a later move out of
    the tier and back does not.
    """
    tier_id, since = stored[0], stored[1]
    return tier_id == previous["tier"][1] and since == _moment(
        previous["tier_since"][1]
    )


def restore_tiers(
    previous_by_member: Mapping[int, Mapping[str, list[Any]]],
    ladder: Ladder | None,
    *,
    batch_id: int,
    now: dt.datetime,
    opening: bool,
) -> RestoreResult:
    """Give members back the tier fields that an import replaced.

    ``previous_by_member`` maps member ids to ImportedMember.previous, whose
    tier fields contain [value before, value the import left]. Members
    without them are ignored. Only members that still have the tier placement the
    import left are restored (see ``_still_as_left``). A member in another
    tier is counted as a conflict and left alone, because a later
    evaluation or override moved it.

    A restore that moves the member to another tier writes a TierChange,
    so the benefits sweep ends the import's tier's ongoing benefits. Its
    reason is OPENING for an opening balance import (``opening``), else
    PROMOTION or DEMOTION by the ranks in ``ladder``, as an evaluation
    would write. A member who had no tier goes to the base tier of
    ``ladder``, as a first evaluation would place it, or back to no tier
    when ``ladder`` is None. Per chunk of members this costs one locking
    SELECT, and the restored members are written in batches.
    """
    member_ids = sorted(
        member_id
        for member_id, previous in previous_by_member.items()
        if "tier" in previous
    )
    result = RestoreResult()
    history: list[TierChange] = []
    restored: list[Member] = []
    with transaction.atomic():
        for chunk in _chunks(member_ids):
            stored = _locked_members(chunk)
            for member_id, fields in stored.items():
                previous = previous_by_member[member_id]
                if not _still_as_left(fields, previous):
                    result.conflicts += 1
                    result.conflicted_members.append(member_id)
                    continue
                member, change = _restored(
                    member_id,
                    previous,
                    ladder,
                    batch_id=batch_id,
                    now=now,
                    opening=opening,
                )
                restored.append(member)
                if change is not None:
                    history.append(change)
                    result.moved_members.add(member_id)
        Member.objects.bulk_update(
            restored,
            ["tier", "tier_since", "review_at", "grace_until"],
            batch_size=CHUNK_SIZE,
        )
        TierChange.objects.bulk_create(history, batch_size=2000)
        if history:
            after_tier_changes()
    result.restored = len(restored)
    logger.info(
        "import tiers rolled back batch=%d restored=%d moved=%d conflicts=%d",
        batch_id,
        result.restored,
        len(result.moved_members),
        result.conflicts,
    )
    return result


def _restore_reason(
    ladder: Ladder | None, from_tier_id: int | None, to_tier_id: int
) -> str:
    """Return the reason an evaluation would give the move between two tiers."""
    source = ladder.by_id(from_tier_id) if ladder else None
    target = ladder.by_id(to_tier_id) if ladder else None
    if source is not None and target is not None and target.rank > source.rank:
        return TierChange.Reason.PROMOTION
    return TierChange.Reason.DEMOTION


def _restored(
    member_id: int,
    previous: Mapping[str, list[Any]],
    ladder: Ladder | None,
    *,
    batch_id: int,
    now: dt.datetime,
    opening: bool,
) -> tuple[Member, TierChange | None]:
    """Return the member with its old tier fields, and the history row to write.

    No history row is written when the tier itself stays, e.g. when the
    import only moved the review date.
    """
    old_tier_id = previous["tier"][0]
    left_tier_id = previous["tier"][1]
    member = Member(
        pk=member_id,
        tier_id=old_tier_id,
        tier_since=_moment(previous["tier_since"][0]),
        review_at=_moment(previous["review_at"][0]),
        grace_until=_moment(previous["grace_until"][0]),
    )
    if old_tier_id is None and ladder is not None:
        # No TierChange can lead to "no tier", so the member goes where a
        # first evaluation would start it.
        member.tier_id = ladder.base.id
        member.tier_since = now
        member.review_at = next_review(ladder.base, now)
    if member.tier_id is None:
        # NOTE: without rules in effect nothing records the move back to no
        # tier, so the import's tier keeps its ongoing benefits open.
        return member, None
    if member.tier_id == left_tier_id:
        return member, None
    left = ladder.by_id(left_tier_id) if ladder else None
    target = ladder.by_id(member.tier_id) if ladder else None
    details: dict[str, Any] = {"batch": batch_id, "rolled_back": True}
    reason: str
    if opening:
        reason = TierChange.Reason.OPENING
        note_key, details["note"] = "opening", ROLLBACK_NOTE
    else:
        reason = _restore_reason(ladder, left_tier_id, member.tier_id)
        note_key, details["note"] = "import", IMPORT_ROLLBACK_NOTE
    explanation = {
        "as_of": now.isoformat(),
        "from_tier": left.name if left else None,
        "tier": member.tier_id,
        "tier_name": target.name if target else None,
        "review_at": _iso(member.review_at),
        note_key: details,
    }
    change = TierChange(
        member_id=member_id,
        from_tier_id=left_tier_id,
        to_tier_id=member.tier_id,
        version_id=ladder.version_id if ladder else None,
        changed_at=now,
        as_of=now,
        reason=reason,
        review_at=member.review_at,
        explanation=explanation,
    )
    return member, change
