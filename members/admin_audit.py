"""Admin pages for the audit log and the erasure tombstones, both read-only.

Nobody, superusers included, may add, change or delete audit events: the
log is written by the services only. Tombstones can only be lifted, by
staff with ``members.erase_member``, through an action that asks for a
reason and is itself audited.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from members.admin_guards import FreeTextLookupGuard
from members.audit import record_event
from members.models import AuditAction, AuditEvent, ErasureTombstone
from members.rights import (
    Contact,
    ErasureError,
    Kind,
    lift_selected_tombstones,
    tombstone_digest,
)

ERASE_PERMISSION = "members.erase_member"


class ReadOnlyAdmin(FreeTextLookupGuard, admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _member_link(member_id: int | None) -> str:
    if member_id is None:
        return "—"
    url = reverse("admin:members_member_change", args=[member_id])
    return format_html('<a href="{}">#{}</a>', url, member_id)


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("at", "actor", "action", "member_link", "count", "detail_text")
    list_filter = ("action", "user")
    date_hierarchy = "at"
    search_fields = ("username",)
    search_help_text = gettext_lazy("A member id, or a user name.")
    # The member column shows the id only, so no join is needed: a name
    # here would show personal data to every auditor.
    fields = ("at", "user", "username", "action", "member_link", "count", "detail_text")
    readonly_fields = fields

    def lookup_allowed(  # type: ignore[override]
        self, lookup: str, value: str, request: HttpRequest | None = None
    ) -> bool:
        # The member change page links here with ?member=<id>. A list filter
        # on member would list every member by name, so it is not offered.
        if lookup == "member":
            return True
        return super().lookup_allowed(lookup, value, request)

    @admin.display(description=gettext_lazy("user"), ordering="username")
    def actor(self, event: AuditEvent) -> str:
        return event.username or "—"

    @admin.display(description=gettext_lazy("member"), ordering="member_id")
    def member_link(self, event: AuditEvent) -> str:
        return _member_link(event.member_id)

    @admin.display(description=gettext_lazy("detail"))
    def detail_text(self, event: AuditEvent) -> str:
        text = json.dumps(event.detail, ensure_ascii=False, sort_keys=True)
        return format_html("<code>{}</code>", text)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AuditEvent], search_term: str
    ) -> tuple[QuerySet[AuditEvent], bool]:
        """Find events by member id when the term is a number, else by user name."""
        term = search_term.strip().lstrip("#")
        if term.isdigit():
            return queryset.filter(member_id=int(term)), False
        return super().get_search_results(request, queryset, search_term)


# The POST field of the tombstone lookup form on the tombstone list.
LOOKUP_FIELD = "tombstone_lookup"


class LiftForm(forms.Form):
    reason = forms.CharField(
        label=gettext_lazy("Reason"),
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        max_length=2000,
        help_text=gettext_lazy(
            "Why the person may come back, e.g. they joined again and agreed. "
            "It is stored in the audit log."
        ),
    )


@admin.register(ErasureTombstone)
class ErasureTombstoneAdmin(ReadOnlyAdmin):
    list_display = ("short_digest", "kind", "member_link", "created_at")
    list_filter = ("kind",)
    date_hierarchy = "created_at"
    search_fields = ("member__id__exact",)
    search_help_text = gettext_lazy(
        "An erased member's id. To find a tombstone by phone, e-mail or channel "
        "id, use the form below, which is sent as a POST."
    )
    change_list_template = "admin/members/erasuretombstone/change_list.html"
    actions = ("lift",)
    fields = ("digest", "kind", "member_link", "created_at")
    readonly_fields = fields

    @admin.display(description=gettext_lazy("keyed hash"))
    def short_digest(self, tombstone: ErasureTombstone) -> str:
        return tombstone.digest[:16] + "…"

    @admin.display(description=gettext_lazy("erased member"), ordering="member_id")
    def member_link(self, tombstone: ErasureTombstone) -> str:
        return _member_link(tombstone.member_id)

    def has_erase_member_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(ERASE_PERMISSION)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Lifting a tombstone starts from this list.
        if self.has_erase_member_permission(request):
            return True
        return super().has_view_permission(request, obj)

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if request.method == "POST" and LOOKUP_FIELD in request.POST:
            return self._lookup(request)
        return super().changelist_view(request, extra_context)

    def _lookup(self, request: HttpRequest) -> HttpResponse:
        """Hash the posted phone, e-mail or channel:id and list the matches.

        The value arrives in the POST body and leaves only as its keyed
        hash, so it reaches no URL, server log or browser history.
        """
        if not self.has_view_permission(request):
            raise PermissionDenied
        term = request.POST.get(LOOKUP_FIELD, "").strip()
        url = reverse("admin:members_erasuretombstone_changelist")
        if not term:
            return HttpResponseRedirect(url)
        digests = {
            tombstone_digest(Kind.PHONE, term),
            tombstone_digest(Kind.EMAIL, term),
        }
        channel, separator, external_id = term.partition(":")
        if separator and channel and external_id:
            digests.update(Contact(channel, external_id).digests())
        found = list(
            ErasureTombstone.objects.filter(digest__in=digests).values_list(
                "pk", flat=True
            )
        )
        record_event(
            request.user,
            AuditAction.LOOKUP,
            count=len(found),
            detail={"tombstones": found},
        )
        if not found:
            messages.warning(request, _("No tombstone matches that value."))
            return HttpResponseRedirect(url)
        return HttpResponseRedirect(f"{url}?id__in={','.join(map(str, found))}")

    @admin.action(
        description=gettext_lazy("Lift the selected tombstones: let the people back"),
        permissions=["erase_member"],
    )
    def lift(
        self, request: HttpRequest, queryset: QuerySet[ErasureTombstone]
    ) -> HttpResponse | None:
        form = LiftForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            try:
                lifted = lift_selected_tombstones(
                    list(queryset.values_list("pk", flat=True)),
                    request.user,
                    form.cleaned_data["reason"],
                )
            except ErasureError as error:
                self.message_user(request, str(error), messages.ERROR)
                return None
            self.message_user(
                request,
                _(
                    "%(count)d tombstones lifted. Rows with these values are "
                    "accepted again."
                )
                % {"count": lifted},
                messages.SUCCESS,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Lift erasure tombstones"),
            "tombstones": queryset,
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(
            request, "admin/members/member/tombstone_lift.html", context
        )
