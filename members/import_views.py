"""Staff pages for large imports that run in the background.

Staff upload a file, see its check (counts and issues) with a progress bar
while it runs, and confirm the import. The work happens in the tasks of
``members.importing.background``; these views only parse, authorise, call
it and render. Every view needs a staff user with the members.import
permission.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from members.importing.amounts import DECIMAL_MARK_CHOICES
from members.importing.background import (
    ACTIVE_STATUSES,
    QUEUED,
    ImportNotReady,
    confirm_batch,
    queue_batch,
    read_progress,
)
from members.importing.columns import ACTIVITIES, MEMBERS
from members.importing.csv_reader import ENCODING_CHOICES
from members.importing.dates import DATE_ORDER_CHOICES
from members.importing.reading import streaming_max_bytes
from members.importing.sizes import megabytes, size_limit_message
from members.models import Channel, ImportBatch, ImportIssue

# Issues listed on the status page; the error report has all of them.
LISTED_ISSUES = 100
RECENT_BATCHES = 10
_PHASE_LABELS = {
    QUEUED: _("Waiting for a worker to start"),
    "scanning": _("Reading the file"),
    "importing": _("Checking and saving rows"),
    "evaluating": _("Evaluating tiers"),
}


def _importer_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Require a staff user with the members.import permission."""
    checked = permission_required("members.import", raise_exception=True)(view)
    return staff_member_required(checked)


class LargeImportForm(forms.Form):
    kind = forms.ChoiceField(
        label=_("File kind"),
        choices=((MEMBERS, _("Members")), (ACTIVITIES, _("Activities"))),
    )
    file = forms.FileField(label=_("File (CSV or XLSX)"))
    channel = forms.ModelChoiceField(
        label=_("Channel of this file"),
        queryset=Channel.objects.order_by("code"),
        required=False,
        help_text=_(
            "Optional. Its saved column mapping is used, and rows take this "
            "channel when the file has no channel column."
        ),
    )
    encoding = forms.ChoiceField(
        label=_("Encoding (CSV only)"),
        choices=(("", _("Detect")), *ENCODING_CHOICES),
        required=False,
    )
    date_order = forms.ChoiceField(
        label=_("Date order"),
        choices=(("", _("Detect")), *DATE_ORDER_CHOICES),
        required=False,
    )
    decimal_mark = forms.ChoiceField(
        label=_("Decimal mark (activities only)"),
        choices=(("", _("Detect")), *DECIMAL_MARK_CHOICES),
        required=False,
    )

    def clean_file(self) -> Any:
        upload = self.cleaned_data["file"]
        too_large = size_limit_message(upload.size, streaming_max_bytes())
        if too_large:
            raise forms.ValidationError(too_large)
        return upload


def _context(request: HttpRequest, title: object, **values: Any) -> dict[str, Any]:
    return {
        **admin.site.each_context(request),
        "opts": ImportBatch._meta,
        "title": title,
        **values,
    }


@_importer_view
@require_http_methods(["GET", "POST"])
def large_import(request: HttpRequest) -> HttpResponse:
    """Show the upload form; on POST, store the file and queue its check."""
    form = LargeImportForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        options = {
            "encoding": data["encoding"],
            "date_order": data["date_order"],
            "decimal_mark": data["decimal_mark"] if data["kind"] == ACTIVITIES else "",
        }
        batch = queue_batch(
            data["file"],
            data["kind"],
            user=request.user,
            options=options,
            channel=data["channel"],
        )
        return redirect("members:large-import-status", batch_id=batch.pk)
    recent = ImportBatch.objects.filter(
        status__in=(*ACTIVE_STATUSES, ImportBatch.Status.CHECKED)
    ).select_related("created_by")[:RECENT_BATCHES]
    context = _context(
        request,
        _("Import a large file"),
        form=form,
        recent=recent,
        max_size=megabytes(streaming_max_bytes()),
    )
    return TemplateResponse(request, "admin/members/large_import.html", context)


def _progress(batch: ImportBatch) -> dict[str, Any]:
    """Return the batch's status and progress as the status page and JSON show it."""
    progress = read_progress(batch.pk) or {}
    phase = progress.get("phase")
    done = progress.get("done") or 0
    total = progress.get("total")
    percent = None
    if total:
        percent = min(100, done * 100 // total)
    waiting = batch.status == ImportBatch.Status.CHECKED and phase == QUEUED
    working = batch.status in ACTIVE_STATUSES or waiting
    return {
        "status": batch.status,
        "status_label": str(batch.get_status_display()),
        "working": working,
        "phase": phase if working else None,
        "phase_label": str(_PHASE_LABELS.get(phase or "", "")) if working else "",
        "done": done,
        "total": total,
        "percent": percent if working else None,
        "message": batch.message,
    }


@_importer_view
@require_GET
def large_import_status(request: HttpRequest, batch_id: int) -> HttpResponse:
    """Show a batch's progress, and once checked, its counts, issues and confirm button."""
    batch = get_object_or_404(ImportBatch, pk=batch_id)
    progress = _progress(batch)
    issues = ImportIssue.objects.filter(batch=batch).order_by("line", "pk")
    context = _context(
        request,
        _("Import #%(id)s: %(file)s") % {"id": batch.pk, "file": batch.file_name},
        batch=batch,
        progress=progress,
        issues=issues[:LISTED_ISSUES],
        issue_count=issues.count(),
        can_confirm=batch.status == ImportBatch.Status.CHECKED
        and not progress["working"],
        progress_url=reverse("members:large-import-progress", args=[batch.pk]),
        batch_url=reverse("admin:members_importbatch_change", args=[batch.pk]),
        issues_url=reverse("admin:members_importbatch_issues", args=[batch.pk]),
    )
    return TemplateResponse(request, "admin/members/large_import_status.html", context)


@_importer_view
@require_POST
def large_import_confirm(request: HttpRequest, batch_id: int) -> HttpResponse:
    """Queue the import of a checked batch, then show its status page."""
    batch = get_object_or_404(ImportBatch, pk=batch_id)
    try:
        confirm_batch(batch, request.user)
    except ImportNotReady as error:
        messages.error(request, error.message)
    else:
        messages.success(
            request, _("The import was queued. This page shows its progress.")
        )
    return redirect("members:large-import-status", batch_id=batch.pk)


@_importer_view
@require_GET
def large_import_progress(request: HttpRequest, batch_id: int) -> JsonResponse:
    """Return the batch's status and progress as JSON, for the progress bar."""
    batch = get_object_or_404(ImportBatch, pk=batch_id)
    return JsonResponse(_progress(batch))
