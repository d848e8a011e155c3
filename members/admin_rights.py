"""Admin pages for member rights: export one member's data, erase a member.

The member change page (templates/admin/members/member/change_form.html)
links to these views. crm/urls.py mounts ``urlpatterns`` under /admin/
before the stock admin, so the URLs sit beside the member's change page.
"""

from __future__ import annotations

import logging

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_GET, require_http_methods

from members.models import Member
from members.privacy import can_view_personal_data
from members.rights import (
    EXPORT_FORMATS,
    ErasureError,
    ExportFormat,
    erase_member,
    export_member,
)

logger = logging.getLogger(__name__)

EXPORT_PERMISSION = "members.export"
ERASE_PERMISSION = "members.erase_member"


def can_export_member(request: HttpRequest) -> bool:
    """Return whether the user may download a member's unmasked data."""
    user = request.user
    return user.has_perm(EXPORT_PERMISSION) and can_view_personal_data(user)


def can_erase_member(request: HttpRequest) -> bool:
    return request.user.has_perm(ERASE_PERMISSION)


def _change_url(member: Member) -> str:
    return reverse("admin:members_member_change", args=[member.pk])


@require_GET
def export_view(request: HttpRequest, member_id: int) -> HttpResponse:
    """Download one member's data as JSON or as a zip of CSV files.

    ``?format=json`` (the default) or ``?format=csv``. Needs the export
    permission and the permission to see personal data unmasked.
    """
    if not can_export_member(request):
        raise PermissionDenied
    member = get_object_or_404(Member, pk=member_id)
    chosen = request.GET.get("format", ExportFormat.JSON)
    if chosen not in EXPORT_FORMATS:
        return HttpResponse(
            _("Unknown export format %(format)r: use json or csv.")
            % {"format": chosen},
            status=400,
            content_type="text/plain; charset=utf-8",
        )

    export = export_member(member, request.user, chosen)

    response = HttpResponse(export.content, content_type=export.content_type)
    response["Content-Disposition"] = f'attachment; filename="{export.file_name}"'
    return response


class ErasureForm(forms.Form):
    reason = forms.CharField(
        label=gettext_lazy("Reason"),
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=2000,
        help_text=gettext_lazy(
            "Why the data is erased, e.g. the request's ticket number. It is "
            "stored in the audit log, so do not write the person's name or "
            "contact details here."
        ),
    )


@require_http_methods(["GET", "POST"])
def erase_view(request: HttpRequest, member_id: int) -> HttpResponse:
    """Show the erasure form, and erase the member's data on a POST with a reason."""
    if not can_erase_member(request):
        raise PermissionDenied
    member = get_object_or_404(Member, pk=member_id)
    form = ErasureForm(request.POST if request.method == "POST" else None)
    if request.method == "POST" and form.is_valid():
        try:
            result = erase_member(member, request.user, form.cleaned_data["reason"])
        except ErasureError as error:
            form.add_error(None, str(error))
        else:
            messages.success(
                request,
                _(
                    "Member #%(id)s was erased: %(tombstones)d tombstones written, "
                    "%(messages)d pending messages cancelled."
                )
                % {
                    "id": result.member_id,
                    "tombstones": result.tombstones,
                    "messages": result.messages_cancelled,
                },
            )
            return HttpResponseRedirect(_change_url(member))

    context = {
        **admin.site.each_context(request),
        "opts": Member._meta,
        "original": member,
        "member": member,
        "form": form,
        "title": _("Erase the personal data of member #%(id)s") % {"id": member.pk},
        "change_url": _change_url(member),
    }
    return TemplateResponse(request, "admin/members/member/erase.html", context)


urlpatterns: list[URLPattern] = [
    path(
        "members/member/<int:member_id>/export/",
        admin.site.admin_view(export_view),
        name="admin-member-export",
    ),
    path(
        "members/member/<int:member_id>/erase/",
        admin.site.admin_view(erase_view),
        name="admin-member-erase",
    ),
]
