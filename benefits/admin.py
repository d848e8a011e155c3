"""Admin for the catalogue, tier benefits, pools, grants and the approval queue.

Grants are created only by benefits.issuing and pool choices, so the admin
shows them read-only. Approving, rejecting and redeeming go through the
services in benefits.approvals and benefits.redemption.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from benefits.approvals import ApprovalError, approve, reject
from benefits.codes import normalize_code
from benefits.models import (
    Benefit,
    BenefitPool,
    Grant,
    GrantAwaitingApproval,
    TierBenefit,
    TierPeriod,
)
from benefits.redemption import RedemptionError, redeem
from members.admin_guards import FreeTextLookupGuard


def _staff_user(request: HttpRequest) -> User:
    # The admin site sends anonymous requests to its login page first.
    user = request.user
    if not isinstance(user, User):
        raise PermissionDenied
    return user


class TierBenefitInline(admin.TabularInline):
    model = TierBenefit
    extra = 0


@admin.register(Benefit)
class BenefitAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "kind",
        "value",
        "stock",
        "waiting_for_stock",
        "valid_days",
        "valid_until",
        "approval_required",
    ]
    list_filter = ["kind", "approval_required", "tiers"]
    search_fields = ["name"]
    inlines = [TierBenefitInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Benefit]:
        # One annotated count instead of a query per row.
        return (
            super()
            .get_queryset(request)
            .annotate(
                waiting_count=Count(
                    "grants", filter=Q(grants__status=Grant.Status.AWAITING_STOCK)
                )
            )
        )

    @admin.display(description=_("grants waiting for stock"), ordering="waiting_count")
    def waiting_for_stock(self, benefit: Any) -> int:
        return int(benefit.waiting_count)


@admin.register(TierBenefit)
class TierBenefitAdmin(admin.ModelAdmin):
    list_display = ["tier", "benefit", "mode"]
    list_filter = ["tier", "mode"]
    list_select_related = ["tier", "benefit"]
    autocomplete_fields = ["benefit"]


class BenefitPoolForm(forms.ModelForm):
    """The pool form, which rejects a pool with fewer options than choices."""

    class Meta:
        model = BenefitPool
        fields = ["tier", "name", "choose", "options"]

    def clean(self) -> dict[str, Any] | None:
        cleaned_data = super().clean() or {}
        choose = cleaned_data.get("choose")
        options = cleaned_data.get("options")
        # The options are many-to-many, saved after the pool, so the model's
        # clean() and constraints cannot compare them with ``choose``.
        if choose is not None and options is not None and choose > len(options):
            self.add_error(
                "choose",
                ngettext(
                    "Members cannot pick %(choose)d options from %(count)d option. "
                    "Add options or lower the choices per period.",
                    "Members cannot pick %(choose)d options from %(count)d options. "
                    "Add options or lower the choices per period.",
                    len(options),
                )
                % {"choose": choose, "count": len(options)},
            )
        return cleaned_data


@admin.register(BenefitPool)
class BenefitPoolAdmin(admin.ModelAdmin):
    form = BenefitPoolForm
    list_display = ["name", "tier", "choose"]
    list_filter = ["tier"]
    list_select_related = ["tier"]
    filter_horizontal = ["options"]


@admin.register(TierPeriod)
class TierPeriodAdmin(admin.ModelAdmin):
    """Read-only list of the periods that benefits.issuing opened."""

    list_display = ["member", "tier", "starts_at", "ends_at"]
    list_filter = ["tier"]
    list_select_related = ["member", "tier"]
    raw_id_fields = ["member", "opened_by"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class GrantActionForm(ActionForm):
    """The changelist's action bar, with the reason the Reject action needs."""

    reason = forms.CharField(
        label=_("Reason for rejecting"), required=False, max_length=500
    )


class GrantActionsMixin:
    """Approve, reject and redeem actions that call the grant services."""

    action_form = GrantActionForm
    message_user: Any

    def has_approve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("benefits.approve_grant")

    def has_redeem_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("benefits.redeem_grant")

    def _report(self, request: HttpRequest, done: int, text: str) -> None:
        # ``text`` is already translated, with the count filled in by %(count)d.
        if done:
            self.message_user(request, text % {"count": done}, messages.SUCCESS)

    @admin.action(description=_("Approve"), permissions=["approve"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[Grant]) -> None:
        approved = 0
        for grant in queryset.select_related("benefit"):
            try:
                approve(grant, _staff_user(request))
            except ApprovalError as error:
                self.message_user(request, str(error), messages.ERROR)
                continue
            approved += 1
        self._report(
            request,
            approved,
            ngettext(
                "%(count)d grant approved and issued.",
                "%(count)d grants approved and issued.",
                approved,
            ),
        )

    @admin.action(description=_("Reject"), permissions=["approve"])
    def reject_selected(self, request: HttpRequest, queryset: QuerySet[Grant]) -> None:
        reason = request.POST.get("reason", "")
        rejected = 0
        for grant in queryset:
            try:
                reject(grant, _staff_user(request), reason)
            except ApprovalError as error:
                self.message_user(request, str(error), messages.ERROR)
                continue
            rejected += 1
        self._report(
            request,
            rejected,
            ngettext(
                "%(count)d grant rejected.", "%(count)d grants rejected.", rejected
            ),
        )

    @admin.action(description=_("Redeem"), permissions=["redeem"])
    def redeem_selected(self, request: HttpRequest, queryset: QuerySet[Grant]) -> None:
        redeemed = 0
        for grant_id in queryset.values_list("pk", flat=True):
            try:
                redeem(grant_id=grant_id, user=_staff_user(request))
            except RedemptionError as error:
                self.message_user(request, str(error), messages.ERROR)
                continue
            redeemed += 1
        self._report(
            request,
            redeemed,
            ngettext(
                "%(count)d grant redeemed.", "%(count)d grants redeemed.", redeemed
            ),
        )


GRANT_FIELDS = (
    "code",
    "member",
    "benefit",
    "tier",
    "period",
    "origin",
    "pool",
    "pool_slot",
    "status",
    "stock_taken",
    "tier_change",
    "created_at",
    "issued_at",
    "expires_at",
    "approval_due_at",
    "decided_by",
    "decided_at",
    "auto_approved",
    "rejection_reason",
    "ended_at",
    "redeemed_at",
    "redeemed_channel",
    "redemption_reference",
    "redeemed_by",
    "expiry_warned_at",
)


@admin.register(Grant)
class GrantAdmin(FreeTextLookupGuard, GrantActionsMixin, admin.ModelAdmin):
    """Every grant, read-only, with the actions that change its status."""

    list_display = [
        "code",
        "member",
        "benefit",
        "tier",
        "origin",
        "status",
        "issued_at",
        "expires_at",
        "redeemed_at",
    ]
    list_filter = ["status", "origin", "auto_approved", "tier", "benefit"]
    actions = ["approve_selected", "reject_selected", "redeem_selected"]
    # Member, benefit and tier are shown on every row.
    list_select_related = ["member", "benefit", "tier"]
    search_fields = ["code", "member__id__exact"]
    date_hierarchy = "created_at"
    fields = GRANT_FIELDS
    readonly_fields = GRANT_FIELDS

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Grant], search_term: str
    ) -> tuple[QuerySet[Grant], bool]:
        # Staff type codes as members read them out: any case, with spaces.
        normalized = normalize_code(search_term)
        if search_term and queryset.filter(code=normalized).exists():
            return queryset.filter(code=normalized), False
        return super().get_search_results(request, queryset, search_term)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(GrantAwaitingApproval)
class ApprovalQueueAdmin(FreeTextLookupGuard, GrantActionsMixin, admin.ModelAdmin):
    """Grants waiting for a decision, soonest deadline first."""

    actions = ["approve_selected", "reject_selected"]
    list_display = [
        "code",
        "member",
        "benefit",
        "tier",
        "created_at",
        "approval_due_at",
    ]
    list_filter = ["tier", "benefit"]
    list_select_related = ["member", "benefit", "tier"]
    search_fields = ["code", "member__id__exact"]
    ordering = ["approval_due_at", "pk"]
    fields = GRANT_FIELDS
    readonly_fields = GRANT_FIELDS

    def get_queryset(self, request: HttpRequest) -> QuerySet[GrantAwaitingApproval]:
        return (
            super().get_queryset(request).filter(status=Grant.Status.AWAITING_APPROVAL)
        )

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("benefits.approve_grant")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm("benefits.approve_grant")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
