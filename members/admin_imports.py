"""Admin for import batches (with rollback and error reports) and column mappings.

Batches are read-only records of confirmed imports. Staff with the
members.import permission can roll one back from its page, after a
confirmation page that counts what will be removed. Rejected values come
from the file and may be phones or e-mails, so the batch page and the
issues CSV mask them for staff without members.view_personal_data.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import OperationalError
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    StreamingHttpResponse,
)
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from members.admin_guards import FreeTextLookupGuard
from members.importing.batches import (
    RollbackError,
    describe_rollback,
    issue_rows,
    rollback_batch,
)
from members.importing.columns import (
    ACTIVITIES,
    ACTIVITY_COLUMNS,
    COLUMNS,
    MEMBER_COLUMNS,
    MEMBERS,
    check_mapping,
)
from members.importing.report import issues_csv_lines
from members.models import ColumnMapping, ImportBatch, ImportIssue, ImportKind
from members.privacy import can_view_personal_data, mask_cell

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise

logger = logging.getLogger(__name__)

# Maximum issues shown on a batch's page. The CSV download contains them all.
SHOWN_ISSUES = 100


def _has_import_permission(request: HttpRequest) -> bool:
    code = settings.IMPORT_EXPORT_IMPORT_PERMISSION_CODE
    return request.user.has_perm(f"members.{code}")


@admin.register(ImportBatch)
class ImportBatchAdmin(FreeTextLookupGuard, admin.ModelAdmin):
    """Confirmed imports: read-only, with rollback and the error report."""

    list_display = (
        "id",
        "file_name",
        "kind",
        "status",
        "created_by",
        "total_rows",
        "created_count",
        "updated_count",
        "rejected_count",
        "created_at",
        "finished_at",
        "rolled_back_at",
    )
    list_display_links = ("id", "file_name")
    # The user column would otherwise cost one query per row.
    list_select_related = ("created_by",)
    list_filter = ("status", "kind", "channel", "created_at")
    search_fields = ("file_name", "file_sha256")
    date_hierarchy = "created_at"
    change_form_template = "admin/members/importbatch_change_form.html"
    fieldsets = (
        (None, {"fields": ("kind", "status", "message", "channel", "options")}),
        (
            _("File"),
            {"fields": ("file_name", "file_size", "file_sha256")},
        ),
        (
            _("Counts"),
            {
                "fields": (
                    "total_rows",
                    "processed_rows",
                    "created_count",
                    "updated_count",
                    "unchanged_count",
                    "already_imported_count",
                    "duplicate_count",
                    "rejected_count",
                )
            },
        ),
        (
            _("History"),
            {
                "fields": (
                    "created_by",
                    "created_at",
                    "started_at",
                    "finished_at",
                    "rolled_back_by",
                    "rolled_back_at",
                    "rollback_summary",
                )
            },
        ),
        (_("Rejected and skipped lines"), {"fields": ("issues_table",)}),
    )

    def get_readonly_fields(
        self, request: HttpRequest, obj: ImportBatch | None = None
    ) -> list[str]:
        fields = [field.name for field in self.model._meta.fields]
        return [*fields, "issues_table", "masked_issues_table"]

    def get_fieldsets(
        self, request: HttpRequest, obj: ImportBatch | None = None
    ) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if can_view_personal_data(request.user):
            return fieldsets
        return [
            (
                title,
                {
                    **options,
                    "fields": [
                        "masked_issues_table" if name == "issues_table" else name
                        for name in options["fields"]
                    ],
                },
            )
            for title, options in fieldsets
        ]

    def has_view_permission(
        self, request: HttpRequest, obj: ImportBatch | None = None
    ) -> bool:
        return _has_import_permission(request) or super().has_view_permission(
            request, obj
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(
        self, request: HttpRequest, obj: ImportBatch | None = None
    ) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: ImportBatch | None = None
    ) -> bool:
        # Activities and identities point to their batch, so it is kept.
        return False

    @admin.display(description=_("first rejected and skipped lines"))
    def issues_table(self, batch: ImportBatch) -> str:
        return _issues_table(batch, masked=False)

    @admin.display(description=_("first rejected and skipped lines"))
    def masked_issues_table(self, batch: ImportBatch) -> str:
        return _issues_table(batch, masked=True)

    def get_urls(self) -> list[URLPattern]:
        urls = [
            path(
                "<path:object_id>/rollback/",
                self.admin_site.admin_view(self.rollback_view),
                name="members_importbatch_rollback",
            ),
            path(
                "<path:object_id>/issues.csv",
                self.admin_site.admin_view(self.issues_csv_view),
                name="members_importbatch_issues",
            ),
        ]
        return urls + super().get_urls()

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        batch = self.get_object(request, object_id)
        context = {
            **(extra_context or {}),
            "can_roll_back": batch is not None
            and batch.status == ImportBatch.Status.APPLIED
            and _has_import_permission(request),
            "has_issues": batch is not None and batch.issues.exists(),
        }
        return super().change_view(request, object_id, form_url, context)

    def _viewable_batch(self, request: HttpRequest, object_id: str) -> ImportBatch:
        batch = self.get_object(request, object_id)
        if batch is None:
            raise Http404(f"Import batch {object_id!r} not found.")
        if not self.has_view_permission(request, batch):
            raise PermissionDenied
        return batch

    def issues_csv_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        """Stream the batch's rejected and skipped lines as a CSV for Excel."""
        batch = self._viewable_batch(request, object_id)

        rows = issue_rows(batch)
        if not can_view_personal_data(request.user):
            rows = (_masked_issue(row) for row in rows)  # type: ignore[assignment,misc]
        lines = issues_csv_lines(rows)
        response = StreamingHttpResponse(
            (line.encode("utf-8") for line in lines),
            content_type="text/csv; charset=utf-8",
        )
        response["Content-Disposition"] = (
            f'attachment; filename="import-{batch.pk}-issues.csv"'
        )
        return response

    def rollback_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Show what a rollback removes, and roll the batch back on POST."""
        batch = self._viewable_batch(request, object_id)
        if not _has_import_permission(request):
            raise PermissionDenied
        change_url = reverse("admin:members_importbatch_change", args=[batch.pk])

        if request.method == "POST":
            try:
                summary = rollback_batch(batch, request.user)
            except RollbackError as error:
                self.message_user(request, error.message, messages.ERROR)
            except OperationalError as error:
                # SQLite raises "database is locked" once its busy timeout
                # passes while another import holds the write lock, and
                # PostgreSQL raises on a lock or statement timeout. The
                # rollback's transaction is undone, so the batch stays APPLIED.
                # Only the error's type is logged: a database message can
                # quote row values, which may be personal data.
                logger.warning(
                    "import rollback failed batch=%d user_id=%s error=%s",
                    batch.pk, request.user.pk, type(error).__name__,
                )  # fmt: skip
                self.message_user(request, _busy_message(batch), messages.ERROR)
            else:
                self.message_user(request, _rollback_message(batch, summary))
            return redirect(change_url)

        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": batch,
            "title": _("Roll back import #%(id)s") % {"id": batch.pk},
            "batch": batch,
            "counts": describe_rollback(batch),
            "can_roll_back": batch.status == ImportBatch.Status.APPLIED,
            "change_url": change_url,
        }
        return TemplateResponse(
            request, "admin/members/importbatch_rollback.html", context
        )


def _issues_table(batch: ImportBatch, masked: bool) -> str:
    """Render the batch's first issues as a table, values masked if ``masked``."""
    issues = ImportIssue.objects.filter(batch=batch).order_by("line", "pk")
    rows = issues.values_list("line", "status", "column", "value", "reason")
    shown = list(rows[:SHOWN_ISSUES])
    if masked:
        shown = [_masked_issue(row) for row in shown]
    if not shown:
        return format_html("{}", "—")
    body = format_html_join(
        "",
        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
        shown,
    )
    return format_html(
        '<table class="import-issues"><thead><tr><th>{}</th><th>{}</th>'
        "<th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>{}</tbody>"
        "</table>",
        _("Line"),
        _("Status"),
        _("Column"),
        _("Value"),
        _("Reason"),
        body,
    )


def _masked_issue(row: tuple[Any, ...]) -> tuple[Any, ...]:
    line, status, column, value, reason = row
    return line, status, column, mask_cell(column, value), reason


def _busy_message(batch: ImportBatch) -> str:
    message = _(
        "Import #%(id)s was not rolled back, and nothing was changed: another "
        "import or job is writing to the database. Try again in a minute."
    )
    return message % {"id": batch.pk}


def _rollback_message(batch: ImportBatch, summary: dict[str, Any]) -> str:
    """Return the message shown after a rollback, with its main counts."""
    counts = [
        (_("activities deleted"), summary.get("activities_deleted")),
        (_("members deleted"), summary.get("members_deleted")),
        (_("members kept"), summary.get("members_kept")),
        (_("members restored"), summary.get("members_restored")),
        (_("identities deleted"), summary.get("identities_deleted")),
        (_("tiers restored"), summary.get("tiers_restored")),
        (
            _("values changed since the import, left as they are"),
            summary.get("conflicts"),
        ),
    ]
    details = [f"{label}: {value}" for label, value in counts if value is not None]
    if summary.get("tiers_evaluated") is False:
        details.append(str(_("tiers were not evaluated: no rule version in effect")))
    message = _("Import #%(id)s was rolled back (%(details)s).")
    return message % {"id": batch.pk, "details": "; ".join(details)}


# Column mappings

# Every import column once, members' first, for one text field each.
MAPPED_COLUMNS = tuple(dict.fromkeys(MEMBER_COLUMNS + ACTIVITY_COLUMNS))
FILE_KINDS = [
    (MEMBERS, ImportKind.MEMBERS.label),
    (ACTIVITIES, ImportKind.ACTIVITIES.label),
]


def _header_field_name(column: str) -> str:
    return f"header_{column}"


def _header_help(column: str) -> StrOrPromise:
    if column in MEMBER_COLUMNS and column in ACTIVITY_COLUMNS:
        return _("Used in member and activity files.")
    if column in MEMBER_COLUMNS:
        return _("Used in member files only.")
    return _("Used in activity files only.")


class ColumnMappingFormBase(forms.ModelForm):
    """A channel's mapping as one header text field per import column."""

    kind = forms.ChoiceField(label=_("file kind"), choices=FILE_KINDS)

    class Meta:
        model = ColumnMapping
        fields = ("channel", "kind")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        saved = self.instance.columns or {}
        for column in MAPPED_COLUMNS:
            self.fields[_header_field_name(column)].initial = saved.get(column, "")

    def mapping(self) -> dict[str, str]:
        """Return {column: header} of the filled header fields."""
        mapping = {}
        for column in MAPPED_COLUMNS:
            header = (self.cleaned_data.get(_header_field_name(column)) or "").strip()
            if header:
                mapping[column] = header
        return mapping

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        kind = cleaned.get("kind")
        if kind not in COLUMNS:
            return cleaned
        for column, problem in check_mapping(kind, self.mapping()):
            self.add_error(_header_field_name(column), problem)
        return cleaned

    def save(self, commit: bool = True) -> ColumnMapping:
        self.instance.columns = self.mapping()
        return super().save(commit)


def _header_fields() -> dict[str, forms.Field]:
    return {
        _header_field_name(column): forms.CharField(
            label=column,
            required=False,
            max_length=200,
            help_text=_header_help(column),
        )
        for column in MAPPED_COLUMNS
    }


# The header fields are declared on the class, because the admin builds its
# form from declared fields.
ColumnMappingForm = type(
    "ColumnMappingForm", (ColumnMappingFormBase,), _header_fields()
)


@admin.register(ColumnMapping)
class ColumnMappingAdmin(admin.ModelAdmin):
    form = ColumnMappingForm
    list_display = ("channel", "kind", "headers", "updated_at", "updated_by")
    # The channel and user columns would otherwise cost a query per row.
    list_select_related = ("channel", "updated_by")
    list_filter = ("kind",)
    search_fields = ("channel__code", "channel__name")
    readonly_fields = ("updated_at", "updated_by")
    fieldsets = (
        (None, {"fields": ("channel", "kind", "updated_at", "updated_by")}),
        (
            _("Header in the channel's files, per import column"),
            {
                "fields": [_header_field_name(column) for column in MAPPED_COLUMNS],
                "description": _(
                    "Leave a column empty to use the built-in header names. "
                    "Headers are compared ignoring case, spaces and full-width "
                    "characters."
                ),
            },
        ),
    )

    @admin.display(description=_("headers"))
    def headers(self, mapping: ColumnMapping) -> str:
        columns = mapping.columns or {}
        return ", ".join(f"{column} = {header}" for column, header in columns.items())

    def save_model(
        self, request: HttpRequest, obj: ColumnMapping, form: Any, change: bool
    ) -> None:
        obj.updated_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)
