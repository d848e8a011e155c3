"""Admin pages for identity across channels: suspected duplicates and merges.

The pages hang off the MemberMerge admin, which the admin index lists as
"Member merges":

- ``duplicates/`` lists the groups of live members that share a phone or
  an e-mail address (members.identity.suspected_duplicates). Its "Add"
  link on the index leads here too.
- ``merge/?a=<id>&b=<id>&keep=<id>`` shows two members side by side with
  what a merge moves, and merges them after a reason and a confirmation.
- ``<id>/change/`` shows a merge read-only, and ``<id>/revert/`` reverts it
  after a confirmation.

Merging and reverting need both members.change_member and
members.delete_member, because a merge changes one member and retires the
other. The duplicates page needs members.view_member, as the member list
does, and shows no more personal data than that list: names, phones and
e-mails are masked for staff without members.view_personal_data, and each
member shown unmasked is recorded in the audit log.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import capfirst
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from members.admin_guards import FreeTextLookupGuard
from members.audit import record_events
from members.identity import EMAIL, DuplicateGroup, suspected_duplicates
from members.merging import (
    GRANTS,
    MOVED_MODELS,
    STAYED_REASONS,
    MergeError,
    MergePlan,
    merge_members,
    plan_merge,
    revert_merge,
)
from members.models import AuditAction, ChannelIdentity, Member, MemberMerge
from members.privacy import (
    MEMBER_FIELD_MASKS,
    can_view_personal_data,
    mask_email,
    mask_name,
    mask_phone,
    mask_text,
)

logger = logging.getLogger(__name__)

MERGE_PERMISSIONS = ("members.change_member", "members.delete_member")


def can_merge(request: HttpRequest) -> bool:
    """Return whether the user may merge members and revert merges."""
    return request.user.has_perms(MERGE_PERMISSIONS)


def _member_url(member_id: int) -> str:
    return reverse("admin:members_member_change", args=[member_id])


def _member_link(member: Member) -> SafeString:
    # str(member) is the masked name and the id, shown to every user.
    return format_html('<a href="{}">{}</a>', _member_url(member.pk), member)


def _record_unmasked_view(
    request: HttpRequest, member_ids: list[int], page: str
) -> None:
    """Record a personal data view of each member a page shows unmasked."""
    if member_ids and can_view_personal_data(request.user):
        record_events(
            request.user, AuditAction.VIEW_PERSONAL, member_ids, detail={"page": page}
        )


def _shown_groups(request: HttpRequest, groups: list[DuplicateGroup]) -> list[dict]:
    """Return the duplicate groups as the page shows them to this user."""
    visible = can_view_personal_data(request.user)
    rows = []
    for group in groups:
        if visible:
            value = group.value
        elif group.kind == EMAIL:
            value = mask_email(group.value)
        else:
            value = mask_phone(group.value)
        entries = [
            {
                "member": entry.member,
                "name": entry.member.name if visible else mask_name(entry.member.name),
                "channels": entry.channels,
                "activity_count": entry.activity_count,
            }
            for entry in group.members
        ]
        rows.append(
            {"kind": group.kind, "value": value, "size": group.size, "members": entries}
        )
    return rows


def merged_into_notice(member: Member) -> SafeString:
    """Return the "merged into" line for a member's change page, or a dash.

    The line links the kept member and the merge, which can be reverted there.
    """
    if member.merged_into_id is None:
        return format_html("{}", "—")
    merge = (
        MemberMerge.objects.filter(
            source=member,
            target_id=member.merged_into_id,
            status=MemberMerge.Status.MERGED,
        )
        .order_by("-merged_at", "-pk")
        .first()
    )
    kept = format_html(
        '<a href="{}">#{}</a>',
        _member_url(member.merged_into_id),
        member.merged_into_id,
    )
    if merge is None:
        return format_html(_("Merged into member {}."), kept)
    return format_html(
        _('Merged into member {} on {} (<a href="{}">merge #{}</a>).'),
        kept,
        f"{merge.merged_at:%Y-%m-%d}",
        reverse("admin:members_membermerge_change", args=[merge.pk]),
        merge.pk,
    )


def _member_id(value: str | None) -> int | None:
    """Return a member id typed as 12 or #12, or None if it is not one."""
    text = (value or "").strip().removeprefix("#")
    # isdigit() is also true for superscript digits, which int() rejects.
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        return None
    return int(text)


def _model_name(label: str) -> str:
    return capfirst(str(MOVED_MODELS[label]._meta.verbose_name_plural))


def _row_counts(member_ids: list[int]) -> dict[int, dict[str, int]]:
    """Return each member's number of rows per moved model: one query per model."""
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for label, model in MOVED_MODELS.items():
        rows = (
            model._default_manager.filter(member_id__in=member_ids)
            .order_by()
            .values_list("member_id")
            .annotate(count=Count("pk"))
        )
        found = dict(rows)
        for member_id in member_ids:
            counts[member_id][label] = found.get(member_id, 0)
    return counts


def _channels(member_ids: list[int]) -> dict[int, list[str]]:
    identities = (
        ChannelIdentity.objects.filter(member_id__in=member_ids)
        .select_related("channel")
        .order_by("channel__code", "external_id")
    )
    found: dict[int, list[str]] = defaultdict(list)
    for identity in identities:
        found[identity.member_id].append(str(identity))
    return found


def _contact(member: Member, visible: bool) -> dict[str, str]:
    """Return the member's name, phone and e-mail, masked unless ``visible``."""
    return {
        field: value if visible else MEMBER_FIELD_MASKS[field](value)
        for field, value in (
            ("name", member.name),
            ("phone", member.phone),
            ("email", member.email),
        )
    }


class MergeForm(forms.Form):
    source = forms.IntegerField(widget=forms.HiddenInput)
    target = forms.IntegerField(widget=forms.HiddenInput)
    reason = forms.CharField(
        label=gettext_lazy("Reason"),
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=gettext_lazy(
            "Why the two members are one person, e.g. the same phone and name "
            "in two shops. Kept with the merge for audit."
        ),
    )
    confirm = forms.BooleanField(
        label=gettext_lazy(
            "I compared both members and want to merge them. The merge can be "
            "reverted from its record."
        ),
    )


def _plan_rows(plan: MergePlan, visible: bool) -> dict[str, Any]:
    """Return the rows the merge form lists for a plan.

    Unless ``visible``, the profile values are masked as their field is.
    """
    moving = [
        {"name": _model_name(label), "count": len(ids)}
        for label, ids in plan.moves.items()
        if ids
    ]
    stayed = [
        {"name": _model_name(label), "count": len(ids), "reason": STAYED_REASONS[label]}
        for label, ids in plan.stayed.items()
    ]
    profile = []
    for name, (old, new) in plan.profile.items():
        mask = MEMBER_FIELD_MASKS.get(name)
        if mask is not None and not visible:
            old, new = mask(old or ""), mask(new or "")
        profile.append(
            {
                "field": cast(models.Field, Member._meta.get_field(name)).verbose_name,
                "old": old or "—",
                "new": new or "—",
            }
        )
    return {"moving": moving, "stayed": stayed, "profile": profile}


@admin.register(MemberMerge)
class MemberMergeAdmin(FreeTextLookupGuard, admin.ModelAdmin):
    """Merges as read-only audit records, with the duplicates and merge pages."""

    list_display = (
        "merged_at",
        "source_link",
        "target_link",
        "status",
        "merged_by",
        "reverted_at",
    )
    # The member and user columns would otherwise cost a query per row.
    list_select_related = ("source", "target", "merged_by")
    list_filter = ("status",)
    search_fields = ("=source__id", "=target__id")
    fields = (
        "source_link",
        "target_link",
        "status",
        "reason",
        "merged_by",
        "merged_at",
        "reverted_by",
        "reverted_at",
        "moved_summary",
    )
    readonly_fields = fields
    change_form_template = "admin/members/merge_change_form.html"
    change_list_template = "admin/members/merge_change_list.html"

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) or can_merge(request)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Staff often give the shared phone or e-mail as the reason.
        if can_view_personal_data(request.user):
            return self.fields
        return tuple("masked_reason" if f == "reason" else f for f in self.fields)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return self.get_fields(request, obj)

    @admin.display(description=gettext_lazy("reason"))
    def masked_reason(self, merge: MemberMerge) -> str:
        return mask_text(merge.reason)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return can_merge(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=gettext_lazy("merged member"))
    def source_link(self, merge: MemberMerge) -> SafeString:
        return _member_link(merge.source)

    @admin.display(description=gettext_lazy("kept member"))
    def target_link(self, merge: MemberMerge) -> SafeString:
        return _member_link(merge.target)

    @admin.display(description=gettext_lazy("what moved"))
    def moved_summary(self, merge: MemberMerge) -> SafeString:
        moved = merge.moved or {}
        rows = [
            (_model_name(label), len(moved.get(label, [])), "")
            for label in MOVED_MODELS
            if moved.get(label)
        ]
        for label, ids in (moved.get("stayed") or {}).items():
            reason = _("stayed with the merged member: %(reason)s") % {
                "reason": STAYED_REASONS.get(label, "")
            }
            rows.append((_model_name(label), len(ids), reason))
        ended = moved.get("ended_grants") or {}
        if ended:
            rows.append(
                (
                    _model_name(GRANTS),
                    len(ended),
                    _("ended by the merge, so their codes cannot be redeemed"),
                )
            )
        if not rows:
            return format_html("{}", _("Nothing moved."))
        body = format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows)
        return format_html("<table>{}</table>", body)

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        urls = [
            path("duplicates/", view(self.duplicates_view), name="members_duplicates"),
            path("merge/", view(self.merge_view), name="members_merge"),
            path(
                "<path:object_id>/revert/",
                view(self.revert_view),
                name="members_membermerge_revert",
            ),
        ]
        return [*urls, *super().get_urls()]

    def add_view(
        self,
        request: HttpRequest,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # A merge starts from two members, which the duplicates page offers.
        if not can_merge(request):
            raise PermissionDenied
        return HttpResponseRedirect(reverse("admin:members_duplicates"))

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra = {**(extra_context or {}), "can_merge": can_merge(request)}
        return super().change_view(request, object_id, form_url, extra)

    def _page_context(self, request: HttpRequest, title: str) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "can_merge": can_merge(request),
        }

    def duplicates_view(self, request: HttpRequest) -> HttpResponse:
        if not request.user.has_perm("members.view_member"):
            raise PermissionDenied
        page, groups = suspected_duplicates(request.GET.get("page", 1))
        member_ids = [entry.member.pk for group in groups for entry in group.members]
        _record_unmasked_view(request, member_ids, "suspected duplicates")
        context = {
            **self._page_context(request, _("Suspected duplicates")),
            "page": page,
            "groups": _shown_groups(request, groups),
            "email_kind": EMAIL,
        }
        return TemplateResponse(request, "admin/members/duplicates.html", context)

    def merge_view(self, request: HttpRequest) -> HttpResponse:
        if not can_merge(request):
            raise PermissionDenied
        form = MergeForm(request.POST if request.method == "POST" else None)
        if request.method == "POST":
            source_id = _member_id(request.POST.get("source"))
            target_id = _member_id(request.POST.get("target"))
        else:
            source_id, target_id = self._chosen_pair(request)
        context = self._page_context(request, _("Merge two members"))
        members = Member.objects.select_related("tier").in_bulk(
            [pk for pk in (source_id, target_id) if pk is not None]
        )
        source, target = members.get(source_id or 0), members.get(target_id or 0)
        if source is None or target is None:
            context["error"] = _(
                "Choose two existing members by their ids, e.g. from the "
                "suspected duplicates."
            )
            return TemplateResponse(request, "admin/members/merge_form.html", context)

        if request.method == "POST" and form.is_valid():
            try:
                merge = merge_members(
                    source,
                    target,
                    user=cast(User, request.user),
                    reason=form.cleaned_data["reason"],
                )
            except MergeError as error:
                context["error"] = str(error)
            else:
                self.message_user(
                    request,
                    _("Member #%(source)s was merged into member #%(target)s.")
                    % {"source": source.pk, "target": target.pk},
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:members_membermerge_change", args=[merge.pk])
                )
        elif request.method != "POST":
            form = MergeForm(initial={"source": source.pk, "target": target.pk})

        try:
            plan = plan_merge(source, target)
        except MergeError as error:
            context["error"] = str(error)
            plan = None
        ids = [source.pk, target.pk]
        counts = _row_counts(ids)
        channels = _channels(ids)
        visible = can_view_personal_data(request.user)
        _record_unmasked_view(request, ids, "merge")
        context.update(
            {
                "form": form,
                "plan": _plan_rows(plan, visible) if plan else None,
                "takes_source_tier": plan.takes_source_tier if plan else False,
                "source": source,
                "target": target,
                "sides": [
                    {
                        "member": target,
                        "role": _("kept"),
                        "channels": channels[target.pk],
                        **_contact(target, visible),
                    },
                    {
                        "member": source,
                        "role": _("merged"),
                        "channels": channels[source.pk],
                        **_contact(source, visible),
                    },
                ],
                "count_rows": [
                    {
                        "name": _model_name(label),
                        "counts": [counts[target.pk][label], counts[source.pk][label]],
                    }
                    for label in MOVED_MODELS
                ],
                "swap_url": f"{reverse('admin:members_merge')}?a={source.pk}"
                f"&b={target.pk}&keep={source.pk}",
            }
        )
        return TemplateResponse(request, "admin/members/merge_form.html", context)

    @staticmethod
    def _chosen_pair(request: HttpRequest) -> tuple[int | None, int | None]:
        """Return the (source, target) ids from ``?a=&b=&keep=``.

        The member kept is ``a`` unless ``keep`` names ``b``.
        """
        first, second, keep = (
            _member_id(request.GET.get(name)) for name in ("a", "b", "keep")
        )
        if first is None or second is None:
            return None, None
        if keep == second:
            return first, second
        return second, first

    def revert_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        merge = self.get_object(request, object_id)
        if merge is None or not can_merge(request):
            raise PermissionDenied
        change_url = reverse("admin:members_membermerge_change", args=[merge.pk])
        if request.method == "POST":
            try:
                revert_merge(merge, user=cast(User, request.user))
            except MergeError as error:
                self.message_user(request, str(error), messages.ERROR)
            else:
                self.message_user(
                    request,
                    _(
                        "Merge #%(id)s was reverted: member #%(source)s is "
                        "separate again."
                    )
                    % {"id": merge.pk, "source": merge.source_id},
                    messages.SUCCESS,
                )
            return HttpResponseRedirect(change_url)
        if merge.status == MemberMerge.Status.REVERTED:
            self.message_user(
                request,
                _("Merge #%(id)s is already reverted.") % {"id": merge.pk},
                messages.WARNING,
            )
            return HttpResponseRedirect(change_url)
        context = {
            **self._page_context(request, _("Revert merge #%(id)s") % {"id": merge.pk}),
            "merge": merge,
            "original": merge,
            "change_url": change_url,
            "summary": self.moved_summary(merge),
        }
        return TemplateResponse(request, "admin/members/merge_revert.html", context)
