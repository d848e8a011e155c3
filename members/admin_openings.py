"""Admin pages that import opening balances: upload, check, then confirm.

Uploading runs a dry run and keeps the file in a CHECKED import batch
(members.importing.openings.check_openings). The preview shows the counts
and the rejected lines, and confirming imports the kept file into that
batch. Both steps need the members.import permission. The pages are
reached at admin/members/opening-balances/.
"""

from __future__ import annotations

import logging
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_POST

from members.importing.amounts import DECIMAL_MARK_CHOICES
from members.importing.csv_reader import ENCODING_CHOICES
from members.importing.dates import DATE_ORDER_CHOICES
from members.importing.openings import (
    COLUMNS,
    KIND,
    ConfirmError,
    OpeningOptions,
    check_openings,
    confirm_openings,
    tier_outcome_counts,
)
from members.importing.report import ImportReport
from members.importing.sizes import size_limit_message
from members.models import ImportBatch, Member

logger = logging.getLogger(__name__)

# Lines of each list shown on a page. The batch's error report has them all.
SHOWN_LINES = 200
UPLOAD_URL = "admin:members_opening_balances"
CONFIRM_URL = "admin:members_opening_balances_confirm"


class OpeningBalancesForm(forms.Form):
    """The file and the choices that detection cannot make alone."""

    import_file = forms.FileField(
        label=_("File"),
        help_text=_(
            "CSV or XLSX with the columns external_id, channel, tier, "
            "growth_value, spend and as_of. Chinese headers such as 会员号, "
            "渠道, 等级, 成长值, 累计消费 and 截止日期 work too."
        ),
    )
    cut_over = forms.DateField(
        label=_("Cut-over date"),
        required=False,
        help_text=_(
            "The as_of date of lines that leave it empty: the day the previous "
            "program's totals were taken (YYYY-MM-DD)."
        ),
    )
    encoding = forms.ChoiceField(
        label=_("Encoding"),
        required=False,
        choices=[("", _("Detect")), *ENCODING_CHOICES],
    )
    date_order = forms.ChoiceField(
        label=_("Date order"),
        required=False,
        choices=[("", _("Detect")), *DATE_ORDER_CHOICES],
    )
    decimal_mark = forms.ChoiceField(
        label=_("Decimal mark"),
        required=False,
        choices=[("", _("Detect")), *DECIMAL_MARK_CHOICES],
    )

    def clean_import_file(self) -> Any:
        upload = self.cleaned_data["import_file"]
        too_large = size_limit_message(upload.size)
        if too_large:
            raise forms.ValidationError(too_large)
        return upload

    def options(self) -> OpeningOptions:
        data = self.cleaned_data
        return OpeningOptions(
            cut_over=data["cut_over"],
            encoding=data["encoding"] or None,
            date_order=data["date_order"] or None,
            decimal_mark=data["decimal_mark"] or None,
        )


def _require_import_permission(request: HttpRequest) -> None:
    if not request.user.has_perm("members.import"):
        raise PermissionDenied


def _batch_url(name: str, batch_id: int | None) -> str:
    """Return the URL of a batch admin page, or "" when none is registered."""
    if batch_id is None:
        return ""
    try:
        return reverse(f"admin:members_importbatch_{name}", args=[batch_id])
    except NoReverseMatch:
        return ""


def _page(
    request: HttpRequest, template: str, title: Any, **context: Any
) -> TemplateResponse:
    return TemplateResponse(
        request,
        template,
        {
            **admin.site.each_context(request),
            "title": title,
            "opts": Member._meta,
            "columns": COLUMNS,
            **context,
        },
    )


def _report_context(report: ImportReport) -> dict[str, Any]:
    lines = report.sorted_lines()
    return {
        "report": report,
        "rejections": sorted(report.rejections, key=lambda issue: issue.line)[
            :SHOWN_LINES
        ],
        "skipped": sorted(report.skipped, key=lambda issue: issue.line)[:SHOWN_LINES],
        "lines": [line for line in lines if line.values][:SHOWN_LINES],
        "tier_counts": tier_outcome_counts(report),
        "shown_lines": SHOWN_LINES,
        "batch_url": _batch_url("change", report.batch_id),
        "issues_url": _batch_url("issues", report.batch_id),
    }


def upload_view(request: HttpRequest) -> HttpResponse:
    """Show the upload form, or check the uploaded file and show the preview."""
    _require_import_permission(request)
    form = OpeningBalancesForm(request.POST or None, request.FILES or None)
    if request.method != "POST" or not form.is_valid():
        return _page(
            request,
            "admin/members/opening_balances.html",
            _("Import opening balances"),
            form=form,
        )

    upload = form.cleaned_data["import_file"]
    report, batch = check_openings(
        upload.read(), file_name=upload.name, options=form.options(), user=request.user
    )

    if batch is None:
        return _page(
            request,
            "admin/members/opening_balances.html",
            _("Import opening balances"),
            form=form,
            refused=report.refused,
        )
    return _page(
        request,
        "admin/members/opening_balances_report.html",
        _("Check opening balances"),
        confirm_url=reverse(CONFIRM_URL, args=[batch.pk]),
        **_report_context(report),
    )


@require_POST
def confirm_view(request: HttpRequest, batch_id: int) -> HttpResponse:
    """Import the file of a checked batch and show what was saved."""
    _require_import_permission(request)
    batch = get_object_or_404(ImportBatch, pk=batch_id, kind=KIND)

    try:
        report = confirm_openings(batch, request.user)
    except ConfirmError as error:
        messages.error(request, error.message)
        return HttpResponseRedirect(reverse(UPLOAD_URL))

    if report.refused:
        messages.error(request, report.refused)
        return HttpResponseRedirect(reverse(UPLOAD_URL))
    return _page(
        request,
        "admin/members/opening_balances_report.html",
        _("Opening balances imported"),
        confirmed=True,
        **_report_context(report),
    )


def opening_balance_urls(site: AdminSite) -> list[URLPattern]:
    """Return the URL patterns of these pages, wrapped by ``site``'s login check."""
    return [
        path(
            "members/opening-balances/",
            site.admin_view(upload_view),
            name="members_opening_balances",
        ),
        path(
            "members/opening-balances/<int:batch_id>/confirm/",
            site.admin_view(confirm_view),
            name="members_opening_balances_confirm",
        ),
    ]


def _add_to_site(site: AdminSite) -> None:
    """Put the pages in front of ``site``'s own URLs.

    The pages belong to no model admin, and the URL configuration of the
    site is built on first use, after every app is ready, so adding them
    here is enough.
    """
    site_urls = site.get_urls

    def get_urls() -> list[Any]:
        return [*opening_balance_urls(site), *site_urls()]

    site.get_urls = get_urls  # type: ignore[method-assign]


_add_to_site(admin.site)
