"""django-import-export resources for members and activities.

Import does not go through the library's row-by-row loop: ``import_data``
hands the whole file to ``members.importing.service.import_data``, which
reads, cleans and saves it set-based in one transaction, and turns the
report into a library Result. Rejected rows are counted as skipped rows
with a reason, so they never stop staff from confirming the other rows.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db.models import Prefetch, QuerySet
from django.utils import timezone
from import_export import resources
from import_export.fields import Field
from import_export.results import Error, Result, RowResult

from members.importing.cleaning import RowIssue
from members.importing.columns import (
    ACTIVITIES,
    ACTIVITY_COLUMNS,
    MEMBER_COLUMNS,
    MEMBERS,
)
from members.importing.errors import FileRejected
from members.importing.formats import UploadedFile
from members.importing.report import (
    ImportReport,
    LineOutcome,
    SkippedIssue,
    issues_csv,
)
from members.importing.service import import_data
from members.models import Activity, ChannelIdentity, Member
from members.privacy import mask_cell, mask_email, mask_name, mask_phone

logger = logging.getLogger(__name__)

# Rows shown on the preview and result pages; the CSV report has them all.
PREVIEW_LINES = 100
SHOWN_ISSUES = 500

IssueT = TypeVar("IssueT", bound=RowIssue)


class ImportResult(Result):
    """A library Result that carries the import report for the admin pages.

    With ``masked`` set, the values the pages show (previewed cells, rejected
    and skipped values, the CSV download) have their phones and e-mail
    addresses masked. The admin sets it for staff without the permission
    to view personal data.
    """

    def __init__(
        self, report: ImportReport | None = None, refused_batch_id: int | None = None
    ) -> None:
        super().__init__()
        self.report = report
        self.refused_batch_id = refused_batch_id
        self.masked = False
        if report is None:
            return
        self.total_rows = report.total_rows
        self.totals[RowResult.IMPORT_TYPE_NEW] = report.created
        self.totals[RowResult.IMPORT_TYPE_UPDATE] = report.updated
        self.totals[RowResult.IMPORT_TYPE_SKIP] = (
            report.unchanged
            + report.already_imported
            + report.duplicates
            + report.rejected
        )

    def _preview_lines(self) -> list[LineOutcome]:
        return self.report.sorted_lines()[:PREVIEW_LINES] if self.report else []

    @property
    def preview_headers(self) -> list[str]:
        """Return the value names of the previewed lines, in first-seen order."""
        headers: dict[str, None] = {}
        for outcome in self._preview_lines():
            headers.update(dict.fromkeys(outcome.values))
        return list(headers)

    def _shown(self, column: str, value: str) -> str:
        return mask_cell(column, value) if self.masked else value

    @property
    def preview_rows(self) -> list[tuple[int, str, list[str]]]:
        """Return (line, status, values in preview_headers order) per line."""
        headers = self.preview_headers
        return [
            (
                outcome.line,
                str(outcome.status),
                [self._shown(h, outcome.values.get(h, "")) for h in headers],
            )
            for outcome in self._preview_lines()
        ]

    @property
    def shown_rejections(self) -> list[RowIssue]:
        issues = self.report.rejections[:SHOWN_ISSUES] if self.report else []
        return [self._shown_issue(issue) for issue in issues]

    @property
    def shown_skipped(self) -> list[SkippedIssue]:
        issues = self.report.skipped[:SHOWN_ISSUES] if self.report else []
        return [self._shown_issue(issue) for issue in issues]

    def _shown_issue(self, issue: IssueT) -> IssueT:
        return _masked_issue(issue) if self.masked else issue

    @property
    def batch_id(self) -> int | None:
        """Return the id of the ImportBatch that recorded a confirmed import."""
        return self.report.batch_id if self.report else self.refused_batch_id

    @property
    def issues_csv_url(self) -> str:
        """Return the rejected and skipped lines as a data: URL for a download link.

        Only previews use it: a confirmed import's lines are downloaded from
        its batch, without putting the whole file into the page.
        """
        if self.report is None:
            return ""
        data = (
            _masked_issues_csv(self.report) if self.masked else issues_csv(self.report)
        )
        encoded = base64.b64encode(data).decode("ascii")
        return f"data:text/csv;charset=utf-8;base64,{encoded}"


def _masked_issue(issue: IssueT) -> IssueT:
    return dataclasses.replace(issue, value=mask_cell(issue.column, issue.value))


def _masked_issues_csv(report: ImportReport) -> bytes:
    """Return the issues CSV of ``report`` with phones and e-mails masked."""
    masked = copy.copy(report)
    masked.rejections = [_masked_issue(issue) for issue in report.rejections]
    masked.skipped = [_masked_issue(issue) for issue in report.skipped]
    return issues_csv(masked)


def _rejected_result(message: str, batch_id: int | None = None) -> ImportResult:
    result = ImportResult(refused_batch_id=batch_id)
    result.append_base_error(Error(FileRejected(message)))
    return result


class FileImportResource(resources.ModelResource):
    """Base of the resources: imports a whole UploadedFile through the service."""

    import_kind = ""
    columns: tuple[str, ...] = ()

    def import_data(  # type: ignore[override]
        self,
        dataset: UploadedFile,
        dry_run: bool = False,
        raise_errors: bool = False,
        use_transactions: bool | None = None,
        collect_failed_rows: bool = False,
        rollback_on_validation_errors: bool = False,
        **kwargs: Any,
    ) -> ImportResult:
        """Import the file; return a Result whose base error is a rejection.

        Every import runs in its own transaction, so ``use_transactions`` and
        the other row-loop options of the library do not apply. ``channel``
        in ``kwargs`` is the Channel chosen on the import form, if any.
        """
        if not isinstance(dataset, UploadedFile):
            raise TypeError(
                "Member and activity imports read files through "
                "members.importing.formats.CSVFormat or XLSXFormat."
            )
        file_name = kwargs.get("file_name") or ""
        try:
            report = import_data(
                dataset.data,
                self.import_kind,
                file_name=file_name,
                file_format=dataset.file_format,
                encoding=kwargs.get("encoding") or None,
                date_order=kwargs.get("date_order") or None,
                decimal_mark=kwargs.get("decimal_mark") or None,
                dry_run=dry_run,
                user=kwargs.get("user"),
                channel=kwargs.get("channel") or None,
            )
        except Exception:
            if raise_errors:
                raise
            # The transaction was rolled back before the error reached here.
            logger.exception(
                "import failed file=%s kind=%s", file_name, self.import_kind
            )
            return _rejected_result(
                "The import failed unexpectedly and nothing was saved. Try again; "
                "if it fails again, send the file to support."
            )
        if report.refused:
            return _rejected_result(report.refused, report.batch_id)
        return ImportResult(report)

    def get_diff_headers(self) -> list[str]:
        return list(self.columns)


@dataclass(frozen=True)
class MemberExportRow:
    """One exported member line: a member with one of its channel identities."""

    member: Member
    identity: ChannelIdentity | None


class MemberResource(FileImportResource):
    """Members, exported one line per channel identity in the import layout.

    ``masked=True`` writes names, phones and e-mails masked; the admin passes
    it for staff without the permission to view personal data. Code that
    exports for itself, such as tests and commands, gets the values as
    stored.
    """

    import_kind = MEMBERS
    columns = MEMBER_COLUMNS

    def __init__(self, masked: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.masked = masked

    external_id = Field(column_name="external_id")
    name = Field(column_name="name")
    phone = Field(column_name="phone")
    email = Field(column_name="email")
    channel = Field(column_name="channel")
    joined_at = Field(column_name="joined_at")

    class Meta:
        model = Member
        fields = MEMBER_COLUMNS
        export_order = MEMBER_COLUMNS
        # Members per page of the export's paginated query; each page costs
        # two queries (members, then their identities).
        chunk_size = 2000

    def iter_queryset(self, queryset: QuerySet[Member]) -> Iterator[MemberExportRow]:  # type: ignore[override]
        identities = ChannelIdentity.objects.select_related("channel").order_by("pk")
        queryset = queryset.prefetch_related(
            Prefetch("identities", queryset=identities)
        )
        for member in super().iter_queryset(queryset):
            for identity in list(member.identities.all()) or [None]:
                yield MemberExportRow(member, identity)

    def dehydrate_external_id(self, row: MemberExportRow) -> str:
        return row.identity.external_id if row.identity else ""

    def dehydrate_name(self, row: MemberExportRow) -> str:
        name = row.member.name
        return mask_name(name) if self.masked else name

    def dehydrate_phone(self, row: MemberExportRow) -> str:
        phone = row.member.phone
        return mask_phone(phone) if self.masked else phone

    def dehydrate_email(self, row: MemberExportRow) -> str:
        email = row.member.email
        return mask_email(email) if self.masked else email

    def dehydrate_channel(self, row: MemberExportRow) -> str:
        return row.identity.channel.code if row.identity else ""

    def dehydrate_joined_at(self, row: MemberExportRow) -> str:
        return row.member.joined_on.isoformat() if row.member.joined_on else ""


class ActivityResource(FileImportResource):
    """Activities in the import layout; amounts export as numbers."""

    import_kind = ACTIVITIES
    columns = ACTIVITY_COLUMNS

    external_id = Field(column_name="external_id")
    occurred_at = Field(column_name="occurred_at")
    amount = Field(column_name="amount")
    channel = Field(column_name="channel")
    kind = Field(column_name="kind")
    reference = Field(column_name="reference")
    quantity = Field(column_name="quantity")

    class Meta:
        model = Activity
        fields = ACTIVITY_COLUMNS
        export_order = ACTIVITY_COLUMNS
        chunk_size = 2000

    def iter_queryset(self, queryset: QuerySet[Activity]) -> Iterator[Activity]:  # type: ignore[override]
        queryset = queryset.select_related("channel", "kind").prefetch_related(
            "member__identities"
        )
        yield from super().iter_queryset(queryset)

    def dehydrate_external_id(self, activity: Activity) -> str:
        """Return the member's id in the activity's channel, else its first id."""
        identities = sorted(activity.member.identities.all(), key=lambda i: i.pk)
        for identity in identities:
            if identity.channel_id == activity.channel_id:
                return identity.external_id
        return identities[0].external_id if identities else ""

    def dehydrate_occurred_at(self, activity: Activity) -> str:
        # The offset is written, so a re-import gives the same instant.
        return timezone.localtime(activity.occurred_at).isoformat(sep=" ")

    def dehydrate_amount(self, activity: Activity) -> Any:
        return activity.amount

    def dehydrate_channel(self, activity: Activity) -> str:
        return activity.channel.code

    def dehydrate_kind(self, activity: Activity) -> str:
        return activity.kind.code

    def dehydrate_reference(self, activity: Activity) -> str:
        return activity.reference

    def dehydrate_quantity(self, activity: Activity) -> int:
        return activity.quantity
