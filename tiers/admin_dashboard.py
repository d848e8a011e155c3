"""The operations dashboard in the admin: on the admin home and on its own page.

The views read the figures of tiers.dashboard, which stay cached for a few
minutes. Each figure becomes a chart drawn as inline SVG on the server,
followed by its numbers as a table, and the export writes the same tables
to an Excel workbook. Nothing loads from a CDN and no JavaScript runs. Only active staff with the
``members.view_member`` permission see the figures.

crm/urls.py mounts ``urlpatterns`` before the admin, so ``/admin/`` is the
stock admin index with the dashboard added.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import dateformat
from django.utils.translation import gettext, pgettext
from django.utils.translation import gettext_lazy as _

from members.importing.formats import write_workbook
from members.models import ImportBatch, ImportKind
from tiers.dashboard import (
    AUTOMATIC,
    CARRIED_OVER,
    DEFAULT_WEEKS,
    MANUAL,
    MAX_CHURN_DAYS,
    MAX_WEEKS,
    TRIGGERS,
    BenefitUse,
    Churn,
    Dashboard,
    Distribution,
    DistributionHistory,
    ImportHealth,
    Movements,
    TierLabel,
    TriggerCounts,
    cached_dashboard,
    churn_days_setting,
)
from tiers.formatting import format_count, local_date

logger = logging.getLogger(__name__)

VIEW_PERMISSION = "members.view_member"
XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# Excel's limit on the length of a sheet title.
SHEET_TITLE_LENGTH = 31

NO_TIER_COLOUR = "#c4c4c4"
# Issued grants share one neutral colour, and redeemed ones take their tier's.
ISSUED_COLOUR = "#b9c9d6"
REDEEMED_LEGEND_COLOUR = "#5b6f8a"
TRIGGER_COLOURS = {AUTOMATIC: "#417690", MANUAL: "#c98a00", CARRIED_OVER: "#9c9c9c"}
TRIGGER_LABELS = {
    AUTOMATIC: _("Automatic (rules and reviews)"),
    MANUAL: _("Manual (overrides)"),
    CARRIED_OVER: _("Carried over (opening tier, merge)"),
}
# Column headers of the movements table and sheet.
TRIGGER_HEADERS = {
    AUTOMATIC: _("automatic"),
    MANUAL: _("manual"),
    CARRIED_OVER: _("carried over"),
}
STATUS_COLOURS: dict[str, str] = {
    ImportBatch.Status.QUEUED: "#c5d3e0",
    ImportBatch.Status.CHECKING: "#9dbbd6",
    ImportBatch.Status.CHECKED: "#79a3c9",
    ImportBatch.Status.RUNNING: "#417690",
    ImportBatch.Status.APPLIED: "#2e8b57",
    ImportBatch.Status.REFUSED: "#d9822b",
    ImportBatch.Status.FAILED: "#ba2121",
    ImportBatch.Status.ROLLED_BACK: "#8a8a8a",
}

# Chart geometry, in SVG user units. The SVG scales to its container.
CHART_WIDTH = 480
PLOT_LEFT = 48
PLOT_RIGHT = 12
PLOT_TOP = 12
AXIS_HEIGHT = 22
BAR_LABEL_WIDTH = 104
# Room right of the longest bar for its value, e.g. "1,234,567 (45.6%)".
VALUE_TEXT_WIDTH = 100
BAR_ROW_HEIGHT = 26
# Height of one bar in a row of several, so each keeps room for its label.
BAR_HEIGHT = 15
# At most this many week labels under a weekly chart.
WEEK_LABELS = 7


def can_view_dashboard(request: HttpRequest) -> bool:
    user = request.user
    return bool(user.is_active and user.is_staff and user.has_perm(VIEW_PERMISSION))


# Chart parts handed to the templates


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str
    anchor: str = "start"
    kind: str = "value"


@dataclass(frozen=True)
class Rule:
    """A gridline or axis line."""

    x1: float
    y1: float
    x2: float
    y2: float
    kind: str = "grid"


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Series:
    """One line of a line chart: polyline segments between missing points."""

    colour: str
    name: str
    segments: tuple[str, ...]
    dots: tuple[Dot, ...]


@dataclass(frozen=True)
class LegendItem:
    colour: str
    text: str


@dataclass(frozen=True)
class Cell:
    """A table cell: ``value`` goes to Excel, ``text`` to the page."""

    value: object
    text: str
    url: str = ""
    number: bool = True


@dataclass(frozen=True)
class Table:
    title: str
    headers: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]


@dataclass
class Chart:
    key: str
    title: str
    description: str
    height: float
    table: Table
    width: float = CHART_WIDTH
    rects: list[Rect] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    legend: list[LegendItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


# Text for numbers, dates and names


def count_text(value: int | None) -> str:
    return "—" if value is None else format_count(value)


def percent_text(share: float | None) -> str:
    return "—" if share is None else f"{share * 100:.1f}%"


def percent_value(share: float | None) -> float | None:
    """Return a share as a percentage with one decimal, for spreadsheets."""
    return None if share is None else round(share * 100, 1)


def week_text(monday: dt.date) -> str:
    # Translators: a django.utils.dateformat format string for the Monday
    # that starts a week on a chart axis, e.g. "n月j日". Letters are codes.
    return dateformat.format(monday, pgettext("week on a chart axis", "j M"))


def tier_name(tier: TierLabel | None) -> str:
    return tier.name if tier else gettext("No tier yet")


def tier_colour(tier: TierLabel | None) -> str:
    return tier.colour if tier else NO_TIER_COLOUR


def status_label(status: str) -> str:
    try:
        return str(ImportBatch.Status(status).label)
    except ValueError:
        return status


def kind_label(kind: str) -> str:
    try:
        return str(ImportKind(kind).label)
    except ValueError:
        return kind


def count_cell(value: int | None) -> Cell:
    return Cell(value, count_text(value))


def percent_cell(share: float | None) -> Cell:
    return Cell(percent_value(share), percent_text(share))


def text_cell(text: str, url: str = "") -> Cell:
    return Cell(text, text, url=url, number=False)


# Scales


def nice_scale(largest: float, ticks: int = 4) -> tuple[float, float]:
    """Return (top, step) of an axis from 0 that fits ``largest`` in ``ticks`` steps.

    The step is 1, 2, 2.5 or 5 times a power of ten, and at least 1,
    because the charts count whole members and batches.
    """
    if largest <= 0:
        return float(ticks), 1.0
    rough = largest / ticks
    power = 10 ** math.floor(math.log10(rough))
    step = next(
        (factor * power for factor in (1, 2, 2.5, 5) if factor * power >= rough),
        10 * power,
    )
    step = max(step, 1.0)
    return step * math.ceil(largest / step), step


def _ticks(top: float, step: float) -> list[float]:
    count = round(top / step)
    return [step * index for index in range(count + 1)]


def _week_label_every(weeks: int) -> int:
    return max(1, math.ceil(weeks / WEEK_LABELS))


# Horizontal bars: distribution now, benefits, churn


@dataclass(frozen=True)
class Bar:
    value: float
    colour: str
    title: str
    text: str


def _horizontal_bars(
    chart: Chart, groups: Sequence[tuple[str, Sequence[Bar]]], top: float
) -> None:
    """Draw one row per group with a label at left and its bars stacked in it."""
    plot_width = CHART_WIDTH - BAR_LABEL_WIDTH - VALUE_TEXT_WIDTH
    row = 0.0
    for name, bars in groups:
        row_height = max(BAR_ROW_HEIGHT, BAR_HEIGHT * len(bars) + 6)
        height = (row_height - 6) / len(bars)
        chart.labels.append(
            Label(
                BAR_LABEL_WIDTH - 6,
                row + row_height / 2 + 4,
                name,
                "end",
                "category",
            )
        )
        for index, bar in enumerate(bars):
            y = row + 3 + index * height
            width = plot_width * bar.value / top if top else 0
            chart.rects.append(
                Rect(BAR_LABEL_WIDTH, y, max(width, 0), height, bar.colour, bar.title)
            )
            chart.labels.append(
                Label(BAR_LABEL_WIDTH + width + 4, y + height / 2 + 4, bar.text)
            )
        row += row_height
    chart.rules.append(Rule(BAR_LABEL_WIDTH, 0, BAR_LABEL_WIDTH, row, "axis"))
    chart.height = row + 4


def distribution_chart(distribution: Distribution) -> Chart:
    largest = max((row.members for row in distribution.rows), default=0)
    top, _step = nice_scale(largest)
    table = Table(
        title=gettext("Tiers now"),
        headers=(gettext("Tier"), gettext("Members"), gettext("Share (%)")),
        rows=tuple(
            (
                text_cell(tier_name(row.tier)),
                count_cell(row.members),
                percent_cell(row.share),
            )
            for row in distribution.rows
        ),
    )
    chart = Chart(
        key="distribution",
        title=gettext("Members per tier now"),
        description=gettext("%(total)s members in all.")
        % {"total": count_text(distribution.total)},
        height=0,
        table=table,
    )
    groups = []
    for row in distribution.rows:
        text = f"{count_text(row.members)} ({percent_text(row.share)})"
        title = f"{tier_name(row.tier)}: {text}"
        groups.append(
            (
                tier_name(row.tier),
                [Bar(row.members, tier_colour(row.tier), title, text)],
            )
        )
    _horizontal_bars(chart, groups, top)
    return chart


def benefits_chart(benefits: BenefitUse) -> Chart:
    largest = max((row.issued for row in benefits.rows), default=0)
    top, _step = nice_scale(largest)
    table = Table(
        title=gettext("Benefits"),
        headers=(
            gettext("Tier"),
            gettext("Issued"),
            gettext("Redeemed"),
            gettext("Expired"),
            gettext("Redemption rate (%)"),
        ),
        rows=tuple(
            (
                text_cell(row.tier.name),
                count_cell(row.issued),
                count_cell(row.redeemed),
                count_cell(row.expired),
                percent_cell(row.redemption_rate),
            )
            for row in benefits.rows
        ),
    )
    chart = Chart(
        key="benefits",
        title=gettext("Benefits issued and redeemed per tier"),
        description=gettext(
            "Grants issued from %(start)s to %(end)s: %(issued)s, of which "
            "%(redeemed)s redeemed (%(rate)s)."
        )
        % {
            "start": local_date(benefits.start).isoformat(),
            # The range ends at midnight, so its last day is the one before.
            "end": (local_date(benefits.end) - dt.timedelta(days=1)).isoformat(),
            "issued": count_text(benefits.issued),
            "redeemed": count_text(benefits.redeemed),
            "rate": percent_text(benefits.redemption_rate),
        },
        height=0,
        table=table,
    )
    issued, redeemed = gettext("Issued"), gettext("Redeemed")
    groups = []
    for row in benefits.rows:
        rate = percent_text(row.redemption_rate)
        groups.append(
            (
                row.tier.name,
                [
                    Bar(
                        row.issued,
                        ISSUED_COLOUR,
                        f"{row.tier.name}: {issued} {count_text(row.issued)}",
                        count_text(row.issued),
                    ),
                    Bar(
                        row.redeemed,
                        row.tier.colour,
                        f"{row.tier.name}: {redeemed} {count_text(row.redeemed)} "
                        f"({rate})",
                        f"{count_text(row.redeemed)} ({rate})",
                    ),
                ],
            )
        )
    _horizontal_bars(chart, groups, top)
    chart.legend = [
        LegendItem(ISSUED_COLOUR, issued),
        LegendItem(REDEEMED_LEGEND_COLOUR, gettext("Redeemed (tier colour)")),
    ]
    return chart


def churn_chart(churn: Churn) -> Chart:
    table = Table(
        title=gettext("Churn"),
        headers=(
            gettext("Tier"),
            gettext("Members"),
            gettext("No activity"),
            gettext("Share (%)"),
        ),
        rows=tuple(
            (
                text_cell(tier_name(row.tier)),
                count_cell(row.members),
                count_cell(row.inactive),
                percent_cell(row.share),
            )
            for row in churn.rows
        ),
    )
    chart = Chart(
        key="churn",
        title=gettext("Members with no activity in %(days)s days")
        % {"days": churn.days},
        description=gettext(
            "Since %(since)s: %(inactive)s of %(members)s members (%(share)s) "
            "had no activity."
        )
        % {
            "since": local_date(churn.since).isoformat(),
            "inactive": count_text(churn.inactive),
            "members": count_text(churn.members),
            "share": percent_text(churn.share),
        },
        height=0,
        table=table,
    )
    groups = []
    for row in churn.rows:
        text = f"{percent_text(row.share)} ({count_text(row.inactive)})"
        groups.append(
            (
                tier_name(row.tier),
                [
                    Bar(
                        row.share or 0,
                        tier_colour(row.tier),
                        f"{tier_name(row.tier)}: {text}",
                        text,
                    )
                ],
            )
        )
    _horizontal_bars(chart, groups, 1.0)
    return chart


# Weekly columns: movements and import batches


@dataclass(frozen=True)
class Segment:
    value: int
    colour: str
    title: str


def _week_columns(
    chart: Chart,
    mondays: Sequence[dt.date],
    above: Sequence[Sequence[Segment]],
    below: Sequence[Sequence[Segment]] | None = None,
    plot_height: float = 150,
) -> None:
    """Draw one stacked column per week, upward from zero and optionally downward."""
    largest_above = max((sum(s.value for s in stack) for stack in above), default=0)
    largest_below = max(
        (sum(s.value for s in stack) for stack in below or []), default=0
    )
    top, step = nice_scale(max(largest_above, largest_below))
    halves = 2 if below is not None else 1
    half = plot_height / halves
    zero = PLOT_TOP + half
    unit = half / top
    plot_width = CHART_WIDTH - PLOT_LEFT - PLOT_RIGHT
    slot = plot_width / len(mondays)
    width = max(slot * 0.7, 1)

    for tick in _ticks(top, step):
        y_values = [zero - tick * unit] + ([zero + tick * unit] if halves == 2 else [])
        for y in y_values:
            chart.rules.append(Rule(PLOT_LEFT, y, CHART_WIDTH - PLOT_RIGHT, y))
            chart.labels.append(
                Label(PLOT_LEFT - 4, y + 4, count_text(int(tick)), "end", "axis")
            )
    chart.rules.append(Rule(PLOT_LEFT, zero, CHART_WIDTH - PLOT_RIGHT, zero, "axis"))

    for index, monday in enumerate(mondays):
        x = PLOT_LEFT + index * slot + (slot - width) / 2
        y = zero
        for segment in above[index]:
            height = segment.value * unit
            y -= height
            if segment.value:
                chart.rects.append(
                    Rect(x, y, width, height, segment.colour, segment.title)
                )
        y = zero
        for segment in (below or [[]] * len(mondays))[index]:
            height = segment.value * unit
            if segment.value:
                chart.rects.append(
                    Rect(x, y, width, height, segment.colour, segment.title)
                )
            y += height
        if index % _week_label_every(len(mondays)) == 0:
            chart.labels.append(
                Label(
                    x + width / 2,
                    PLOT_TOP + plot_height + 16,
                    week_text(monday),
                    "middle",
                    "axis",
                )
            )
    chart.height = PLOT_TOP + plot_height + AXIS_HEIGHT


def movements_chart(movements: Movements) -> Chart:
    headers = [gettext("Week from")]
    for direction in (gettext("Promotions"), gettext("Downgrades")):
        headers.extend(f"{direction}, {TRIGGER_HEADERS[t]}" for t in TRIGGERS)
    table = Table(
        title=gettext("Promotions and downgrades"),
        headers=tuple(headers),
        rows=tuple(
            (
                Cell(week.monday.isoformat(), week_text(week.monday), number=False),
                *(count_cell(week.promotions.get(t)) for t in TRIGGERS),
                *(count_cell(week.downgrades.get(t)) for t in TRIGGERS),
            )
            for week in movements.weeks
        ),
    )
    chart = Chart(
        key="movements",
        title=gettext("Promotions and downgrades per week"),
        description=gettext(
            "Promotions above the line, downgrades below. In %(weeks)s weeks: "
            "%(promotions)s promotions (%(manual_up)s manual) and %(downgrades)s "
            "downgrades (%(manual_down)s manual)."
        )
        % {
            "weeks": len(movements.weeks),
            "promotions": count_text(movements.promotions.total),
            "manual_up": count_text(movements.promotions.manual),
            "downgrades": count_text(movements.downgrades.total),
            "manual_down": count_text(movements.downgrades.manual),
        },
        height=0,
        table=table,
    )

    def stack(counts: TriggerCounts, direction: str, monday: dt.date) -> list[Segment]:
        segments = []
        for trigger in TRIGGERS:
            value = counts.get(trigger)
            title = (
                f"{week_text(monday)} · {direction} · {TRIGGER_LABELS[trigger]}: "
                f"{count_text(value)}"
            )
            segments.append(Segment(value, TRIGGER_COLOURS[trigger], title))
        return segments

    promotions, downgrades = gettext("Promotions"), gettext("Downgrades")
    _week_columns(
        chart,
        [week.monday for week in movements.weeks],
        [stack(week.promotions, promotions, week.monday) for week in movements.weeks],
        [stack(week.downgrades, downgrades, week.monday) for week in movements.weeks],
        plot_height=170,
    )
    chart.legend = [
        LegendItem(TRIGGER_COLOURS[t], str(TRIGGER_LABELS[t])) for t in TRIGGERS
    ]
    return chart


def imports_chart(imports: ImportHealth) -> Chart:
    headers = [gettext("Week from")]
    headers.extend(status_label(status) for status in imports.statuses)
    headers.extend([gettext("Rows"), gettext("Rejected rows"), gettext("Rejected (%)")])
    table = Table(
        title=gettext("Import batches"),
        headers=tuple(headers),
        rows=tuple(
            (
                Cell(week.monday.isoformat(), week_text(week.monday), number=False),
                *(count_cell(count) for count in week.batches),
                count_cell(week.rows),
                count_cell(week.rejected),
                percent_cell(week.rejected / week.rows if week.rows else None),
            )
            for week in imports.weeks
        ),
    )
    chart = Chart(
        key="imports",
        title=gettext("Import batches per week"),
        description=gettext(
            "%(batches)s batches with %(rows)s rows, of which %(rejected)s were "
            "rejected (%(rate)s)."
        )
        % {
            "batches": count_text(imports.batches),
            "rows": count_text(imports.rows),
            "rejected": count_text(imports.rejected),
            "rate": percent_text(imports.rejection_rate),
        },
        height=0,
        table=table,
    )
    stacks = []
    for week in imports.weeks:
        stacks.append(
            [
                Segment(
                    count,
                    STATUS_COLOURS.get(status, NO_TIER_COLOUR),
                    f"{week_text(week.monday)} · {status_label(status)}: "
                    f"{count_text(count)}",
                )
                for status, count in zip(imports.statuses, week.batches, strict=True)
            ]
        )
    _week_columns(chart, [week.monday for week in imports.weeks], stacks)
    chart.legend = [
        LegendItem(STATUS_COLOURS.get(status, NO_TIER_COLOUR), status_label(status))
        for status in imports.statuses
        if imports.batches_with_status(status)
    ]
    return chart


def problem_table(imports: ImportHealth) -> Table:
    """List the latest failed and refused batches, linked to their admin page."""
    rows = []
    for problem in imports.problems:
        try:
            url = reverse("admin:members_importbatch_change", args=[problem.id])
        except NoReverseMatch:
            url = ""
        rows.append(
            (
                Cell(problem.id, f"#{problem.id}", url=url),
                text_cell(problem.file_name or "—"),
                text_cell(kind_label(problem.kind)),
                text_cell(status_label(problem.status)),
                Cell(
                    local_date(problem.created_at).isoformat(),
                    local_date(problem.created_at).isoformat(),
                    number=False,
                ),
                count_cell(problem.total_rows),
                count_cell(problem.rejected),
                text_cell(problem.message),
            )
        )
    return Table(
        title=gettext("Import problems"),
        headers=(
            gettext("Batch"),
            gettext("File"),
            gettext("File kind"),
            gettext("Status"),
            gettext("Created on"),
            gettext("Rows"),
            gettext("Rejected rows"),
            gettext("Message"),
        ),
        rows=tuple(rows),
    )


# Lines: distribution over time


def history_chart(history: DistributionHistory, plot_height: float = 150) -> Chart:
    points = history.points
    headers = [gettext("Week from"), gettext("Snapshot day")]
    headers.extend(tier.name for tier in history.tiers)
    table = Table(
        title=gettext("Tiers over time"),
        headers=tuple(headers),
        rows=tuple(
            (
                Cell(point.monday.isoformat(), week_text(point.monday), number=False),
                Cell(
                    point.day.isoformat() if point.day else None,
                    point.day.isoformat() if point.day else "—",
                    number=False,
                ),
                *(count_cell(value) for value in point.members),
            )
            for point in points
        ),
    )
    missing = sum(1 for point in points if point.day is None)
    chart = Chart(
        key="history",
        title=gettext("Members per tier over time"),
        description=gettext(
            "One point per week from the daily snapshots; %(missing)s of "
            "%(weeks)s weeks have no snapshot."
        )
        % {"missing": missing, "weeks": len(points)},
        height=PLOT_TOP + plot_height + AXIS_HEIGHT,
        table=table,
    )
    largest = max(
        (value or 0 for point in points for value in point.members), default=0
    )
    top, step = nice_scale(largest)
    bottom = PLOT_TOP + plot_height
    unit = plot_height / top
    plot_width = CHART_WIDTH - PLOT_LEFT - PLOT_RIGHT
    slot = plot_width / len(points)

    for tick in _ticks(top, step):
        y = bottom - tick * unit
        chart.rules.append(Rule(PLOT_LEFT, y, CHART_WIDTH - PLOT_RIGHT, y))
        chart.labels.append(
            Label(PLOT_LEFT - 4, y + 4, count_text(int(tick)), "end", "axis")
        )
    chart.rules.append(
        Rule(PLOT_LEFT, bottom, CHART_WIDTH - PLOT_RIGHT, bottom, "axis")
    )
    for index, point in enumerate(points):
        if index % _week_label_every(len(points)) == 0:
            chart.labels.append(
                Label(
                    PLOT_LEFT + slot * (index + 0.5),
                    bottom + 16,
                    week_text(point.monday),
                    "middle",
                    "axis",
                )
            )

    for position, tier in enumerate(history.tiers):
        segments: list[str] = []
        current: list[str] = []
        dots = []
        for index, point in enumerate(points):
            value = point.members[position]
            if value is None:
                if current:
                    segments.append(" ".join(current))
                current = []
                continue
            x = PLOT_LEFT + slot * (index + 0.5)
            y = bottom - value * unit
            current.append(f"{x:.1f},{y:.1f}")
            dots.append(
                Dot(
                    x,
                    y,
                    f"{tier.name} · {week_text(point.monday)}: {count_text(value)}",
                )
            )
        if current:
            segments.append(" ".join(current))
        chart.series.append(
            Series(tier.colour, tier.name, tuple(segments), tuple(dots))
        )
    chart.legend = [LegendItem(tier.colour, tier.name) for tier in history.tiers]
    if missing == len(points):
        chart.notes.append(
            gettext(
                "No snapshots yet. The daily job records the tiers each night "
                "just after midnight."
            )
        )
    return chart


def dashboard_charts(dashboard: Dashboard) -> list[Chart]:
    """Return every chart of the dashboard, in page order."""
    return [
        distribution_chart(dashboard.distribution),
        history_chart(dashboard.history),
        movements_chart(dashboard.movements),
        benefits_chart(dashboard.benefits),
        churn_chart(dashboard.churn),
        imports_chart(dashboard.imports),
    ]


def sheet_title(title: str, used: set[str]) -> str:
    """Return ``title`` cut to Excel's length limit and unique in the workbook."""
    for forbidden in "[]:*?/\\":
        title = title.replace(forbidden, " ")
    candidate = title[:SHEET_TITLE_LENGTH]
    number = 2
    while candidate in used:
        suffix = f" {number}"
        candidate = title[: SHEET_TITLE_LENGTH - len(suffix)] + suffix
        number += 1
    used.add(candidate)
    return candidate


def dashboard_workbook(dashboard: Dashboard) -> bytes:
    """Return an XLSX workbook with one sheet per figure, numbers as numbers.

    The text cells go through the project's export writer, which stores them
    as text and marks formula-like text with Excel's quote prefix.
    """
    tables = [chart.table for chart in dashboard_charts(dashboard)]
    tables.append(problem_table(dashboard.imports))
    used: set[str] = set()
    sheets: list[tuple[str, Sequence[str], Iterable[Sequence[object]]]] = []
    for table in tables:
        rows = [[cell.value for cell in row] for row in table.rows]
        sheets.append((sheet_title(table.title, used), table.headers, rows))
    return write_workbook(sheets)


# Views


class DashboardForm(forms.Form):
    weeks = forms.IntegerField(
        label=_("Weeks"),
        min_value=1,
        max_value=MAX_WEEKS,
        help_text=_(
            "How many weeks the weekly charts and the benefit figures cover, "
            "the current week included."
        ),
    )
    churn_days = forms.IntegerField(
        label=_("Days without activity"),
        min_value=1,
        max_value=MAX_CHURN_DAYS,
        help_text=_("A member with no activity in this many days counts as churned."),
    )


def read_range(request: HttpRequest) -> tuple[DashboardForm, int, int, bool]:
    """Return the range form, the weeks and churn days to show, and validity.

    Without parameters the defaults apply: 12 weeks and
    settings.CRM_CHURN_DAYS. Invalid parameters also fall back to them.
    """
    churn_days = churn_days_setting()
    defaults = {"weeks": DEFAULT_WEEKS, "churn_days": churn_days}
    if not any(name in request.GET for name in defaults):
        return DashboardForm(initial=defaults), DEFAULT_WEEKS, churn_days, True
    form = DashboardForm(request.GET)
    if form.is_valid():
        return form, form.cleaned_data["weeks"], form.cleaned_data["churn_days"], True
    return form, DEFAULT_WEEKS, churn_days, False


def home_view(request: HttpRequest) -> HttpResponse:
    """Render the stock admin index with the dashboard above the app list."""
    extra: dict[str, object] = {}
    if can_view_dashboard(request):
        try:
            dashboard = cached_dashboard()
        except DatabaseError:
            logger.exception(
                "dashboard figures failed for the admin home, user id %s",
                request.user.pk,
            )
            extra["dashboard_failed"] = True
        else:
            extra.update(
                dashboard=dashboard,
                charts=dashboard_charts(dashboard),
                problems=problem_table(dashboard.imports),
                dashboard_url=reverse("admin-dashboard"),
            )
    return admin.site.index(request, extra_context=extra)


def dashboard_view(request: HttpRequest) -> HttpResponse:
    """Show every figure at full size, with the range controls and the export."""
    if not can_view_dashboard(request):
        raise PermissionDenied
    form, weeks, churn_days, _valid = read_range(request)

    dashboard = cached_dashboard(
        weeks, churn_days, refresh=request.GET.get("refresh") == "1"
    )

    query = f"weeks={weeks}&churn_days={churn_days}"
    context = {
        **admin.site.each_context(request),
        "title": gettext("Operations dashboard"),
        "form": form,
        "dashboard": dashboard,
        "charts": dashboard_charts(dashboard),
        "problems": problem_table(dashboard.imports),
        "export_url": f"{reverse('admin-dashboard-export')}?{query}",
        "refresh_url": f"{reverse('admin-dashboard')}?{query}&refresh=1",
    }
    return TemplateResponse(request, "admin/dashboard.html", context)


def export_view(request: HttpRequest) -> HttpResponse:
    """Send the figures of the chosen range as an Excel workbook."""
    if not can_view_dashboard(request):
        raise PermissionDenied
    form, weeks, churn_days, valid = read_range(request)
    if not valid:
        return HttpResponseBadRequest(
            gettext("Invalid range: %(errors)s") % {"errors": form.errors.as_text()},
            content_type="text/plain; charset=utf-8",
        )

    dashboard = cached_dashboard(weeks, churn_days)
    workbook = dashboard_workbook(dashboard)

    stamp = local_date(dashboard.computed_at).isoformat()
    return HttpResponse(
        workbook,
        content_type=XLSX_CONTENT_TYPE,
        headers={
            "Content-Disposition": f'attachment; filename="dashboard-{stamp}.xlsx"'
        },
    )


urlpatterns: list[URLPattern] = [
    path("", admin.site.admin_view(home_view), name="admin-home"),
    path("dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path(
        "dashboard/export.xlsx",
        admin.site.admin_view(export_view),
        name="admin-dashboard-export",
    ),
]
