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
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from members.models import AuditEvent, ErasureTombstone
from members.rights import (
    Contact,
    ErasureError,
    Kind,
    lift_selected_tombstones,
    tombstone_digest,
)

ERASE_PERMISSION = "members.erase_member"


class ReadOnlyAdmin(admin.ModelAdmin):
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
    search_fields = ("digest",)
    search_help_text = gettext_lazy(
        "An e-mail, an E.164 phone such as +8613800138000, or a channel id "
        "written as channel:id. The value is hashed and never stored."
    )
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

    def get_search_results(
        self,
        request: HttpRequest,
        queryset: QuerySet[ErasureTombstone],
        search_term: str,
    ) -> tuple[QuerySet[ErasureTombstone], bool]:
        """Hash the term as a phone, an e-mail and a channel id, and match those."""
        term = search_term.strip()
        if not term:
            return queryset, False
        digests = {
            tombstone_digest(Kind.PHONE, term),
            tombstone_digest(Kind.EMAIL, term),
        }
        channel, separator, external_id = term.partition(":")
        if separator and channel and external_id:
            digests.update(Contact(channel, external_id).digests())
        return queryset.filter(digest__in=digests), False

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
