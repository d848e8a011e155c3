"""Opening balances and opening tiers migrated from an earlier loyalty program.

A file has the columns external_id, channel, tier, growth_value, spend and
as_of. Headers are compared after ``normalize_header``, and Chinese headers
such as 会员号, 渠道, 等级, 成长值, 累计消费 and 截止日期 are accepted. Each
line names a member that already exists, by its id in a channel, and gives
what that member had in the previous program at the cut-over date: a tier,
the growth value to date and the spend to date. Purchases are never
invented from these totals.

Opening balance
    Each saved line becomes one Activity of the opening balance kind (the
    ActivityKind with role "opening", code "opening" when several exist).
    Its ``amount`` is the spend, which counts in net spend, and its
    ``growth_points`` the growth value, which counts in growth value without
    weight or cap. ``occurred_at`` is local midnight at the start of the
    as_of date, so the balance counts in every window that contains that day
    (see tiers.metrics). Its reference is "opening-<external_id>" in the
    line's channel, and a member has at most one opening balance. A line
    for a member who already has one is skipped as already imported, so
    importing a file again adds nothing. To correct a balance, roll back the
    import that saved it and import the corrected file.

Opening tier
    A line with a tier sets the member's tier as tiers.openings describes:
    from the as_of date, with the review date the tier's validity gives, and
    never lower than the tier the member has. Ongoing benefits follow the
    tier. Welcome benefits are not meant for an opening tier, because the
    member already received the previous program's welcome gift, and
    tiers.openings decides it.

    The import then evaluates the members' tiers, in the same transaction,
    as it does after any import. A tier with reviews holds until its review
    date. A tier without reviews (continuous validity) holds only while the
    rules keep it, so when the line's balances do not meet that tier's
    rules the evaluation lowers the member at once, and the report says so
    per line ("set to Gold, then Silver at once: the balances do not meet
    Gold's rules") and counts such lines apart from the tiers that held.
    The same happens upwards when the balances meet a higher tier.

The whole file is saved in one transaction, and a dry run rolls it back,
so its report shows exactly what a confirmed import would do. A confirmed
import is recorded as an ImportBatch with the rejected lines as
ImportIssue rows. Every member a line changed gets an ImportedMember row.
Its ``previous`` keeps the tier fields as they were before the import and
as the import left them, after its evaluation, so that rolling the batch
back (members.importing.batches.rollback_batch) restores the tier the
member had before the import.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from members.importing.amounts import (
    DECIMAL_COMMA,
    DECIMAL_POINT,
    decide_decimal_mark,
    parse_amount,
)
from members.importing.batches import (
    add_chunk,
    evaluate_and_record,
    finish_batch,
    mark_running,
    start_batch,
)
from members.importing.cleaning import RowIssue
from members.importing.columns import ColumnMap
from members.importing.dates import (
    DAY_FIRST,
    MONTH_FIRST,
    decide_date_order,
    parse_date,
    program_zone,
)
from members.importing.errors import FileRejected, InvalidValue
from members.importing.lookups import ChannelDirectory, chunked, identities_for
from members.importing.plausibility import EARLIEST_ACTIVITY_DAY
from members.importing.reading import detect_format, read_table
from members.importing.report import ImportReport, Status
from members.importing.table import SourceRow, Table
from members.importing.text import clean_text, fold_width, normalize_header
from members.models import (
    Activity,
    ActivityKind,
    ImportBatch,
    ImportedMember,
    ImportKind,
    Member,
)
from tiers.ladder import Ladder, LadderError, TierRuleSet
from tiers.openings import OpeningTier, place_opening_tiers

logger = logging.getLogger(__name__)

KIND = ImportKind.OPENING_BALANCES.value
COLUMNS = ("external_id", "channel", "tier", "growth_value", "spend", "as_of")
REQUIRED_COLUMNS = ("external_id", "channel")
# A file needs at least one of these, or it carries nothing to import.
VALUE_COLUMNS = ("tier", "growth_value", "spend")
REFERENCE_PREFIX = "opening-"
# Maximum lengths of the model fields the identifiers are matched against.
MAX_LENGTHS = {"external_id": 64, "channel": 64}
BATCH_SIZE = 1000

# Headers of opening balance exports, compared after ``normalize_header``.
_ALIASES = {
    "external_id": (
        "会员号", "会员编号", "会员卡号", "卡号", "客户编号",
        "member_id", "member_no", "customer_id", "card_no", "card_number",
    ),
    "channel": ("渠道", "渠道代码", "来源渠道", "channel_code", "source"),
    "tier": (
        "等级", "会员等级", "级别", "会员级别", "期初等级",
        "level", "member_level", "tier_name", "grade", "opening_tier",
    ),
    "growth_value": (
        "成长值", "累计成长值", "期初成长值",
        "growth", "growth_points", "opening_growth_value",
    ),
    "spend": (
        "累计消费", "累计消费金额", "消费总额", "期初消费",
        "spend_to_date", "total_spend", "net_spend", "opening_spend",
    ),
    "as_of": (
        "截止日期", "截至日期", "迁移日期", "切换日期",
        "as_of_date", "cut_over", "cutover", "cut_over_date", "balance_date",
    ),
}  # fmt: skip
_HEADERS = {
    normalize_header(alias): column
    for column, aliases in _ALIASES.items()
    for alias in (column, *aliases)
}
T = TypeVar("T")


@dataclass(frozen=True)
class OpeningRecord:
    """A cleaned line of an opening balance file."""

    line: int
    channel: str
    external_id: str
    tier: TierRuleSet | None
    growth_value: Decimal
    spend: Decimal
    as_of: dt.datetime


@dataclass(frozen=True)
class OpeningOptions:
    """Choices staff made for the file.

    ``cut_over`` is the as_of date of lines that leave it empty. The others
    settle what detection finds unclear, as in the other imports.
    """

    cut_over: dt.date | None = None
    encoding: str | None = None
    date_order: str | None = None
    decimal_mark: str | None = None


# Headers


def map_opening_headers(headers: Sequence[str]) -> ColumnMap:
    """Map an opening balance file's headers to its columns.

    Raises FileRejected when external_id or channel is missing, when none
    of tier, growth_value and spend is present, or when two headers mean
    the same column.
    """
    positions: dict[str, int] = {}
    ignored = []
    for index, header in enumerate(headers):
        column = _HEADERS.get(normalize_header(header))
        if column is None:
            if header.strip():
                ignored.append(header.strip())
            continue
        if column in positions:
            first = headers[positions[column]].strip()
            raise FileRejected(
                f"Headers {first!r} and {header.strip()!r} both mean column "
                f"{column}. Remove or rename one of them and import again."
            )
        positions[column] = index
    missing = [column for column in REQUIRED_COLUMNS if column not in positions]
    if missing:
        noun = "column" if len(missing) == 1 else "columns"
        raise FileRejected(
            f"Required {noun} {', '.join(missing)} not found in the header row. "
            f"An opening balance file needs the columns {', '.join(COLUMNS)}, "
            "of which tier, growth_value, spend and as_of may be left out."
        )
    if not any(column in positions for column in VALUE_COLUMNS):
        raise FileRejected(
            "The file has none of the columns tier, growth_value and spend, so "
            "it carries nothing to import. Add at least one of them."
        )
    return ColumnMap(positions=positions, ignored=tuple(ignored))


# Cleaning


class _Row:
    """Cleaned access to one line's cells, collecting its issues."""

    def __init__(self, row: SourceRow, columns: ColumnMap) -> None:
        self.row = row
        self.columns = columns
        self.issues: list[RowIssue] = []

    def text(self, column: str) -> str:
        position = self.columns.positions.get(column)
        if position is None or position >= len(self.row.cells):
            return ""
        return clean_text(self.row.cells[position])

    def is_numeric(self, column: str) -> bool:
        return self.columns.positions.get(column) in self.row.numeric

    def reject(self, column: str, value: str, reason: str) -> None:
        self.issues.append(RowIssue(self.row.line, column, value, reason))

    def clean(
        self, column: str, cleaner: Callable[[str], T], *, required: bool = False
    ) -> T | None:
        """Return the cleaned value, or None when it is empty or invalid."""
        text = self.text(column)
        if not text:
            if required:
                self.reject(column, text, "is required but empty")
            return None
        try:
            return cleaner(text)
        except InvalidValue as error:
            self.reject(column, text, error.reason)
            return None

    def check_shape(self, width: int) -> None:
        extra = [cell for cell in self.row.cells[width:] if cell.strip()]
        if extra:
            self.reject(
                "",
                ", ".join(extra),
                f"the line has {len(self.row.cells)} values but the header has "
                f"{width} columns; check for an unquoted comma or delimiter",
            )
        damaged = next((cell for cell in self.row.cells if "\ufffd" in cell), None)
        if damaged is not None:
            self.reject(
                "",
                damaged,
                "contains the replacement character \ufffd, a sign that the "
                "file was saved with the wrong encoding",
            )


def _identifier(column: str) -> Callable[[str], str]:
    def clean(text: str) -> str:
        value = fold_width(text).strip()
        if len(value) > MAX_LENGTHS[column]:
            raise InvalidValue(f"is longer than {MAX_LENGTHS[column]} characters")
        return value

    return clean


def tier_key(name: str) -> str:
    """Return the form tier names are matched in: "ＧＯＬＤ " is "gold"."""
    return fold_width(name).strip().casefold()


def _tier_lookup(
    tiers: Mapping[str, TierRuleSet],
) -> Callable[[str], TierRuleSet]:
    def clean(text: str) -> TierRuleSet:
        tier = tiers.get(tier_key(text))
        if tier is None:
            names = ", ".join(sorted({tier.name for tier in tiers.values()}))
            raise InvalidValue(
                f"is not a tier of the rules in effect; use one of {names}"
            )
        return tier

    return clean


def _balance(decimal_mark: str | None, numeric: bool, text: str) -> Decimal:
    value = parse_amount(text, decimal_mark=decimal_mark, numeric=numeric)
    if value < 0:
        raise InvalidValue("is negative, but a total to date cannot be")
    return value


def _as_of(order: str | None, numeric: bool, today: dt.date, text: str) -> dt.datetime:
    return cut_over_moment(parse_date(text, order=order, numeric=numeric), today)


def cut_over_moment(day: dt.date, today: dt.date) -> dt.datetime:
    """Return local midnight at the start of ``day``, the opening balance's moment.

    Raises InvalidValue for a day before 1990 or after ``today``: a balance
    to date cannot be dated in the future.
    """
    if day < EARLIEST_ACTIVITY_DAY:
        raise InvalidValue(f"is before {EARLIEST_ACTIVITY_DAY.isoformat()}")
    if day > today:
        raise InvalidValue(f"is in the future (today is {today.isoformat()})")
    return dt.datetime.combine(day, dt.time.min, tzinfo=program_zone())


def _text_values(table: Table, columns: ColumnMap, *names: str) -> list[str]:
    """Return the text of the named columns, skipping spreadsheet number cells."""
    values = []
    for name in names:
        position = columns.positions.get(name)
        if position is None:
            continue
        for row in table.rows:
            if position < len(row.cells) and position not in row.numeric:
                values.append(fold_width(clean_text(row.cells[position])))
    return values


def clean_opening_rows(
    table: Table,
    columns: ColumnMap,
    options: OpeningOptions,
    tiers: Mapping[str, TierRuleSet],
) -> tuple[list[OpeningRecord], list[RowIssue]]:
    """Clean every line of an opening balance file into records and row issues.

    ``tiers`` maps ``tier_key`` of each tier name that lines may use to the
    tier of the rules in effect. growth_value and spend are read like amounts, with one decimal
    mark for both columns, and as_of like dates, with one day/month order.
    """
    date_order = decide_date_order(
        _text_values(table, columns, "as_of"), "as_of", options.date_order
    )
    decimal_mark = decide_decimal_mark(
        _text_values(table, columns, "growth_value", "spend"), options.decimal_mark
    )
    today = timezone.localdate()
    default_as_of = None
    if options.cut_over is not None:
        default_as_of = cut_over_moment(options.cut_over, today)
    records, issues = [], []
    for source in table.rows:
        row = _Row(source, columns)
        row.check_shape(len(table.headers))
        external_id = row.clean(
            "external_id", _identifier("external_id"), required=True
        )
        channel = row.clean("channel", _identifier("channel"), required=True)
        tier = row.clean("tier", _tier_lookup(tiers))
        growth = row.clean(
            "growth_value",
            partial(_balance, decimal_mark, row.is_numeric("growth_value")),
        )
        spend = row.clean(
            "spend", partial(_balance, decimal_mark, row.is_numeric("spend"))
        )
        as_of = row.clean(
            "as_of", partial(_as_of, date_order, row.is_numeric("as_of"), today)
        )
        if as_of is None and not row.text("as_of"):
            as_of = default_as_of
            if as_of is None:
                row.reject(
                    "as_of",
                    "",
                    "is required but empty; fill it in or give a cut-over date",
                )
        if not any(row.text(column) for column in VALUE_COLUMNS):
            row.reject(
                "",
                "",
                "has no tier, growth value or spend, so there is nothing to import",
            )
        if row.issues or external_id is None or channel is None or as_of is None:
            issues.extend(row.issues)
            continue
        records.append(
            OpeningRecord(
                line=source.line,
                channel=channel,
                external_id=external_id,
                tier=tier,
                growth_value=growth if growth is not None else Decimal(0),
                spend=spend if spend is not None else Decimal(0),
                as_of=as_of,
            )
        )
    return records, issues


# Saving


def opening_kind() -> ActivityKind:
    """Return the kind opening balances are saved with (one query).

    Raises FileRejected when no kind has the role "opening".
    """
    kinds = list(
        ActivityKind.objects.filter(role=ActivityKind.Role.OPENING).order_by("pk")
    )
    if not kinds:
        raise FileRejected(
            "No activity kind has the role opening balance, so opening balances "
            "cannot be saved. Add one under Activity kinds (code opening, role "
            "Opening balance) and import again."
        )
    return next((kind for kind in kinds if kind.code == "opening"), kinds[0])


def opening_reference(external_id: str) -> str:
    """Return the reference of a member's opening balance in its channel."""
    return f"{REFERENCE_PREFIX}{external_id}"


# Outcomes of a line's opening tier, stored as the line's "tier_outcome".
# TIER_SET: the tier was set and is still the member's after the import's
# evaluation.
TIER_SET = "set"
# TIER_KEPT: the member's own tier ranks as high, so it was kept.
TIER_KEPT = "kept"
# TIER_DROPPED and TIER_RAISED: the tier was set, and the import's
# evaluation moved the member to a lower or a higher tier at once.
TIER_DROPPED = "dropped"
TIER_RAISED = "raised"


def _display(
    record: OpeningRecord, member_id: int, tier_result: tuple[str, str] = ("", "")
) -> dict[str, str]:
    """Return a saved line's values for the report.

    ``tier_result`` is TIER_SET or TIER_KEPT (or "" without a tier) and the
    same in words. ``_note_final_tiers`` changes both when the evaluation
    moves the member.
    """
    outcome, text = tier_result
    return {
        "external_id": record.external_id,
        "channel": record.channel,
        "tier": record.tier.name if record.tier else "",
        "growth_value": str(record.growth_value),
        "spend": str(record.spend),
        "as_of": record.as_of.date().isoformat(),
        "member_id": str(member_id),
        "tier_outcome": outcome,
        "tier_result": text,
    }


@dataclass(frozen=True)
class _Matched:
    record: OpeningRecord
    member_id: int
    channel_id: int


def _match_members(
    records: Sequence[OpeningRecord], report: ImportReport
) -> list[_Matched]:
    """Find each line's member by its id in the line's channel.

    Rejects lines whose channel or member is unknown, and skips a second
    line for one member as a duplicate. Costs one query for the channels
    and one per chunk of external ids.
    """
    channels = ChannelDirectory()
    members = {
        (channel_id, external_id): member_id
        for channel_id, external_id, member_id in identities_for(
            record.external_id for record in records
        )
    }
    first_lines: dict[int, int] = {}
    matched = []
    for record in records:
        channel = channels.get(record.channel)
        if channel is None:
            reason = "is not a known channel; check the code or add the channel"
            report.reject([RowIssue(record.line, "channel", record.channel, reason)])
            continue
        member_id = members.get((channel.pk, record.external_id))
        if member_id is None:
            reason = (
                f"is not a member in channel {channel.code}; import the member "
                "first, then the opening balance"
            )
            issue = RowIssue(record.line, "external_id", record.external_id, reason)
            report.reject([issue])
            continue
        if member_id in first_lines:
            reason = f"duplicate of line {first_lines[member_id]} (same member)"
            issue = RowIssue(record.line, "external_id", record.external_id, reason)
            report.skip(issue, Status.DUPLICATE)
            continue
        first_lines[member_id] = record.line
        matched.append(_Matched(record, member_id, channel.pk))
    return matched


def _already_imported(
    matched: Sequence[_Matched], kind_ids: Sequence[int]
) -> tuple[set[int], set[tuple[int, str]]]:
    """Return the members that have an opening balance, and the references taken.

    Costs two queries per chunk of lines.
    """
    members: set[int] = set()
    references: set[tuple[int, str]] = set()
    for chunk in chunked(list(matched)):
        members.update(
            Activity.objects.filter(
                member_id__in=[m.member_id for m in chunk], kind_id__in=kind_ids
            ).values_list("member_id", flat=True)
        )
        references.update(
            Activity.objects.filter(
                channel_id__in={m.channel_id for m in chunk},
                reference__in=[opening_reference(m.record.external_id) for m in chunk],
            ).values_list("channel_id", "reference")
        )
    return members, references


def _new_openings(matched: Sequence[_Matched], report: ImportReport) -> list[_Matched]:
    """Skip the lines of members who already have an opening balance."""
    kind_ids = list(
        ActivityKind.objects.filter(role=ActivityKind.Role.OPENING).values_list(
            "pk", flat=True
        )
    )
    members, references = _already_imported(matched, kind_ids)
    new = []
    for item in matched:
        reference = opening_reference(item.record.external_id)
        if item.member_id in members or (item.channel_id, reference) in references:
            reason = (
                "already has an opening balance; roll back the import that saved "
                "it to import a different one"
            )
            issue = RowIssue(
                item.record.line, "external_id", item.record.external_id, reason
            )
            report.skip(issue, Status.ALREADY_IMPORTED)
            continue
        new.append(item)
    return new


def _tier_results(
    new: Sequence[_Matched], ladder: Ladder | None, batch: ImportBatch | None
) -> tuple[dict[int, tuple[str, str]], dict[int, dict[str, list[Any]]]]:
    """Place the opening tiers of ``new``.

    Returns what happened to each member's tier (see ``_display``) and the
    tier fields each placement replaced, both by member id.
    """
    openings = [
        OpeningTier(
            item.member_id, item.record.tier.id, item.record.as_of, item.record.line
        )
        for item in new
        if item.record.tier is not None
    ]
    if not openings:
        return {}, {}
    assert ladder is not None, "lines with a tier are cleaned against a ladder"
    placed = place_opening_tiers(
        openings,
        ladder,
        batch_id=batch.pk if batch else None,
        now=timezone.now(),
    )
    results: dict[int, tuple[str, str]] = {}
    for item in new:
        tier = item.record.tier
        if tier is None:
            continue
        if item.member_id in placed.previous:
            results[item.member_id] = (TIER_SET, f"set to {tier.name}")
        elif item.member_id in placed.kept:
            kept = placed.kept[item.member_id]
            text = f"kept {kept}, which ranks at or above {tier.name}"
            results[item.member_id] = (TIER_KEPT, text)
    return results, placed.previous


def save_openings(
    records: Sequence[OpeningRecord],
    report: ImportReport,
    *,
    ladder: Ladder | None,
    batch: ImportBatch | None = None,
) -> None:
    """Save the opening balances and tiers of ``records`` not saved before.

    ``ladder`` is the rule version that lines with a tier were cleaned
    against, and ``batch`` the confirmed import's record (None in a dry run).
    Costs a fixed number of queries per chunk of lines.
    """
    kind = opening_kind()
    new = _new_openings(_match_members(records, report), report)
    activities = [
        Activity(
            member_id=item.member_id,
            channel_id=item.channel_id,
            kind=kind,
            occurred_at=item.record.as_of,
            amount=item.record.spend,
            growth_points=item.record.growth_value,
            # An opening balance sums up many events and counts no items.
            quantity=0,
            reference=opening_reference(item.record.external_id),
            source=Activity.Source.MIGRATION,
            import_batch=batch,
            import_line=item.record.line,
        )
        for item in new
    ]
    Activity.objects.bulk_create(activities, batch_size=BATCH_SIZE)
    tier_results, replaced = _tier_results(new, ladder, batch)
    if batch is not None:
        ImportedMember.objects.bulk_create(
            [
                ImportedMember(
                    batch=batch,
                    member_id=item.member_id,
                    line=item.record.line,
                    previous=replaced.get(item.member_id, {}),
                )
                for item in new
            ],
            batch_size=BATCH_SIZE,
        )
    for item in new:
        result = tier_results.get(item.member_id, ("", ""))
        report.add_line(
            item.record.line,
            Status.CREATED,
            _display(item.record, item.member_id, result),
        )
        report.member_ids.add(item.member_id)


# Service


def _check_options(options: OpeningOptions) -> None:
    if options.date_order not in (None, DAY_FIRST, MONTH_FIRST):
        raise ValueError(
            f"Unknown date order {options.date_order!r}; use {DAY_FIRST} or "
            f"{MONTH_FIRST}."
        )
    if options.decimal_mark not in (None, DECIMAL_POINT, DECIMAL_COMMA):
        raise ValueError(
            f"Unknown decimal mark {options.decimal_mark!r}; use {DECIMAL_POINT} "
            f"or {DECIMAL_COMMA}."
        )


def _has_tier_values(table: Table, columns: ColumnMap) -> bool:
    position = columns.positions.get("tier")
    if position is None:
        return False
    return any(
        position < len(row.cells) and clean_text(row.cells[position])
        for row in table.rows
    )


def _ladder_for(table: Table, columns: ColumnMap) -> Ladder | None:
    """Load the rules in effect now when lines give tiers, else return None.

    Raises FileRejected when lines give tiers but no rules are in effect,
    because the review date of an opening tier depends on them.
    """
    if not _has_tier_values(table, columns):
        return None
    try:
        return Ladder.load(as_of=timezone.now())
    except LadderError as error:
        raise FileRejected(
            f"Opening tiers cannot be set: {error} Or leave the tier column "
            "empty to import the balances only."
        ) from None


def _clean_and_save(
    data: bytes,
    file_format: str,
    options: OpeningOptions,
    report: ImportReport,
    batch: ImportBatch | None,
) -> Ladder | None:
    """Read, clean and save the file; return the ladder its tiers were read with."""
    table = read_table(data, file_format, options.encoding)
    columns = map_opening_headers(table.headers)
    report.total_rows = len(table.rows)
    report.encoding = table.encoding
    report.delimiter = table.delimiter
    report.ignored_columns = list(columns.ignored)
    ladder = _ladder_for(table, columns)
    tiers = {tier_key(tier.name): tier for tier in ladder.tiers} if ladder else {}
    records, issues = clean_opening_rows(table, columns, options, tiers)
    report.reject(issues)
    save_openings(records, report, ladder=ladder, batch=batch)
    return ladder


def _evaluate_tiers(batch: ImportBatch | None, member_ids: set[int]) -> None:
    """Evaluate the members' tiers now and record the changes in ``batch``.

    The batch's ImportedMember rows then hold the tier fields as the import
    leaves them, which a rollback compares with. Does nothing without rules.
    """
    if not member_ids:
        return
    as_of = timezone.now()
    try:
        ladder = Ladder.load(as_of=as_of)
    except LadderError as error:
        logger.warning(
            "opening import skipped tier evaluation batch=%s members=%d error=%s",
            getattr(batch, "pk", None), len(member_ids), error,
        )  # fmt: skip
        return
    evaluate_and_record(batch, sorted(member_ids), ladder=ladder, as_of=as_of)


def _note_final_tiers(report: ImportReport, ladder: Ladder | None) -> None:
    """Add each saved line's tier after evaluation to its report values.

    A line whose opening tier was set but did not hold gets the outcome
    TIER_DROPPED or TIER_RAISED, and its text names the member's tier
    after evaluation and the reason. Costs one query per chunk of members.
    """
    final: dict[int, tuple[str, int]] = {}
    for chunk in chunked(sorted(report.member_ids)):
        rows = Member.objects.filter(pk__in=chunk, tier__isnull=False).values_list(
            "pk", "tier__name", "tier__rank"
        )
        final.update((pk, (name, rank)) for pk, name, rank in rows)
    ranks = {tier.name: tier.rank for tier in ladder.tiers} if ladder else {}
    for line in report.lines:
        member_id = line.values.get("member_id")
        if not member_id:
            continue
        name, rank = final.get(int(member_id), ("", None))
        line.values["tier_after"] = name
        opening = line.values.get("tier", "")
        if line.values.get("tier_outcome") != TIER_SET or name == opening:
            continue
        opening_rank = ranks.get(opening)
        if rank is not None and opening_rank is not None and rank > opening_rank:
            line.values["tier_outcome"] = TIER_RAISED
            line.values["tier_result"] = (
                f"set to {opening}, then {name} at once: the balances meet "
                f"{name}'s rules"
            )
        else:
            line.values["tier_outcome"] = TIER_DROPPED
            line.values["tier_result"] = (
                f"set to {opening}, then {name or 'no tier'} at once: the "
                f"balances do not meet {opening}'s rules"
            )


def tier_outcome_counts(report: ImportReport) -> Counter[str]:
    """Count the saved lines per opening tier outcome (TIER_SET, TIER_KEPT, ...)."""
    return Counter(
        line.values["tier_outcome"]
        for line in report.lines
        if line.values.get("tier_outcome")
    )


def describe_tier_outcomes(report: ImportReport) -> list[str]:
    """Return the lines of text that report the opening tiers, for the command.

    The first line counts the outcomes. Each line whose opening tier did not
    hold follows, with its number and what happened.
    """
    counts = tier_outcome_counts(report)
    if not counts:
        return []
    moved = counts[TIER_DROPPED] + counts[TIER_RAISED]
    text = [
        f"Opening tiers: {counts[TIER_SET]} set and kept, {counts[TIER_DROPPED]} "
        f"dropped at once and {counts[TIER_RAISED]} raised at once by the "
        f"evaluation, {counts[TIER_KEPT]} not set because the member's tier "
        "ranks as high or higher."
    ]
    if moved:
        for line in report.sorted_lines():
            if line.values.get("tier_outcome") in (TIER_DROPPED, TIER_RAISED):
                text.append(f"Line {line.line}: {line.values['tier_result']}.")
    return text


def _batch_options(options: OpeningOptions, file_format: str) -> dict[str, str]:
    values = {
        "cut_over": options.cut_over.isoformat() if options.cut_over else None,
        "encoding": options.encoding,
        "date_order": options.date_order,
        "decimal_mark": options.decimal_mark,
        "file_format": file_format,
    }
    return {name: value for name, value in values.items() if value}


def options_from_batch(batch: ImportBatch) -> OpeningOptions:
    """Return the choices a checked batch was made with."""
    stored = batch.options or {}
    cut_over = stored.get("cut_over")
    return OpeningOptions(
        cut_over=dt.date.fromisoformat(cut_over) if cut_over else None,
        encoding=stored.get("encoding"),
        date_order=stored.get("date_order"),
        decimal_mark=stored.get("decimal_mark"),
    )


def import_openings(
    data: bytes,
    *,
    file_name: str = "",
    file_format: str | None = None,
    options: OpeningOptions | None = None,
    dry_run: bool = False,
    user: Any = None,
    batch: ImportBatch | None = None,
) -> ImportReport:
    """Import an opening balance file given as bytes; return the report.

    Everything happens in one transaction, which a dry run rolls back. The
    tiers of the members the file changed are evaluated in it too, and each
    saved line's values get the member's tier after that as "tier_after"
    (see ``_note_final_tiers`` for a tier that does not hold).
    A confirmed import is recorded in ``batch`` (a checked batch, which
    starts over) or in a new ImportBatch, ending APPLIED, REFUSED or
    FAILED. A rejected file saves nothing else and gives a report whose
    ``refused`` is the reason.
    """
    options = options or OpeningOptions()
    _check_options(options)
    file_format = detect_format(data, file_name, file_format)
    user_id = getattr(user, "pk", None)
    logger.info(
        "opening import started file=%s format=%s dry_run=%s user_id=%s",
        file_name, file_format, dry_run, user_id,
    )  # fmt: skip
    report = ImportReport(kind=KIND, file_name=file_name, dry_run=dry_run)
    if not dry_run:
        if batch is None:
            batch = start_batch(
                KIND,
                file_name=file_name,
                data_or_size=data,
                user=user,
                options=_batch_options(options, file_format),
            )
        else:
            mark_running(batch)
        report.batch_id = batch.pk
    try:
        with transaction.atomic():
            saving_batch = None if dry_run else batch
            ladder = _clean_and_save(data, file_format, options, report, saving_batch)
            # A dry run evaluates too, so that its report shows the tier
            # each member ends up in, before the rollback undoes it.
            _evaluate_tiers(saving_batch, report.member_ids)
            _note_final_tiers(report, ladder)
            if dry_run:
                transaction.set_rollback(True)
            else:
                assert batch is not None
                add_chunk(batch, report)
                finish_batch(batch, ImportBatch.Status.APPLIED)
    except FileRejected as error:
        logger.warning(
            "opening import rejected file=%s batch=%s reason=%s",
            file_name, report.batch_id, error.message,
        )  # fmt: skip
        if batch is not None and not dry_run:
            finish_batch(batch, ImportBatch.Status.REFUSED, error.message)
        return ImportReport(
            kind=KIND,
            file_name=file_name,
            dry_run=dry_run,
            refused=error.message,
            batch_id=report.batch_id,
        )
    except Exception as error:
        if batch is not None and not dry_run:
            logger.exception(
                "opening import failed file=%s batch=%d", file_name, batch.pk
            )
            finish_batch(
                batch,
                ImportBatch.Status.FAILED,
                f"The import failed unexpectedly ({type(error).__name__}) and "
                "nothing from the file was saved.",
            )
        raise
    logger.info(
        "opening import finished file=%s dry_run=%s batch=%s rows=%d created=%d "
        "already_imported=%d duplicates=%d rejected=%d",
        file_name, dry_run, report.batch_id, report.total_rows, report.created,
        report.already_imported, report.duplicates, report.rejected,
    )  # fmt: skip
    return report


def import_openings_file(
    source: str | Path,
    *,
    options: OpeningOptions | None = None,
    dry_run: bool = False,
    user: Any = None,
) -> ImportReport:
    """Import an opening balance file given by path (see ``import_openings``)."""
    path = Path(source)
    return import_openings(
        path.read_bytes(),
        file_name=path.name,
        options=options,
        dry_run=dry_run,
        user=user,
    )


# Check, then confirm: the admin's two steps


def check_openings(
    data: bytes,
    *,
    file_name: str,
    options: OpeningOptions,
    user: Any,
) -> tuple[ImportReport, ImportBatch | None]:
    """Run a dry run and keep the file in a CHECKED batch for ``confirm_openings``.

    Returns the dry run's report and the batch, which is None for a file
    rejected as a whole: nothing is kept of such a file.
    """
    report = import_openings(
        data, file_name=file_name, options=options, dry_run=True, user=user
    )
    if report.refused:
        return report, None
    file_format = detect_format(data, file_name)
    with transaction.atomic():
        batch = start_batch(
            KIND,
            file_name=file_name,
            data_or_size=data,
            user=user,
            options=_batch_options(options, file_format),
        )
        batch.upload.save(_stored_name(data, file_format), ContentFile(data))
        add_chunk(batch, report)
        finish_batch(batch, ImportBatch.Status.CHECKED)
    report.batch_id = batch.pk
    logger.info(
        "opening import checked batch=%d user_id=%s", batch.pk, batch.created_by_id
    )
    return report, batch


def _stored_name(data: bytes, file_format: str) -> str:
    # The name staff gave the file stays in file_name; the stored name is
    # the content's hash, which needs no cleaning.
    return f"openings-{hashlib.sha256(data).hexdigest()[:16]}.{file_format}"


class ConfirmError(Exception):
    """Raised when a checked batch cannot be imported; nothing was changed."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def confirm_openings(batch: ImportBatch, user: Any) -> ImportReport:
    """Import the file a CHECKED opening balance batch keeps, into that batch.

    The batch row is locked first, so a second confirmation waits and then
    finds the batch no longer CHECKED. Raises ConfirmError, changing
    nothing, for a batch of another kind or status or without its file.
    The kept file is deleted once the import commits.
    """
    with transaction.atomic():
        locked = ImportBatch.objects.select_for_update().get(pk=batch.pk)
        if locked.kind != KIND:
            raise ConfirmError(f"Import #{locked.pk} is not an opening balance import.")
        if locked.status != ImportBatch.Status.CHECKED:
            raise ConfirmError(
                f"Import #{locked.pk} has status {locked.get_status_display()!r}, "
                "so it was not imported again. Upload the file again to import it."
            )
        if not locked.upload:
            raise ConfirmError(
                f"Import #{locked.pk} no longer has its file. Upload the file again."
            )
        with locked.upload.open("rb") as stored:
            data = stored.read()
        report = import_openings(
            data,
            file_name=locked.file_name,
            file_format=(locked.options or {}).get("file_format"),
            options=options_from_batch(locked),
            user=user,
            batch=locked,
        )
        transaction.on_commit(partial(_forget_upload, locked.pk))
    return report


def _forget_upload(batch_id: int) -> None:
    """Delete the file a confirmed batch kept; its rows record what it did."""
    batch = ImportBatch.objects.filter(pk=batch_id).first()
    if batch is None or not batch.upload:
        return
    batch.upload.delete(save=False)
    ImportBatch.objects.filter(pk=batch_id).update(upload="")
