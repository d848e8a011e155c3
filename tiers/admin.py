from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import Count
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from tiers.models import GrowthWeight, Requirement, Tier, TierChange
from tiers.validation import (
    ProposedRequirement,
    ProposedTier,
    current_ladder,
    ladder_problems,
)


class RequirementFormSet(BaseInlineFormSet):
    """Reject requirement edits that would make the ladder inconsistent."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        tier = self.instance
        proposed = []
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE"):
                continue
            proposed.append(
                ProposedRequirement(
                    metric=data["metric"],
                    window=data["window"],
                    window_days=data.get("window_days"),
                    threshold=data["threshold"],
                )
            )
        others = [t for t in current_ladder() if t.id != tier.pk]
        edited = ProposedTier(
            id=tier.pk, name=tier.name, rank=tier.rank, requirements=tuple(proposed)
        )
        problems = ladder_problems([*others, edited])
        relevant = [p.message for p in problems if tier.name in p.tier_names]
        if relevant:
            raise ValidationError(relevant)


class RequirementInline(admin.TabularInline):
    model = Requirement
    formset = RequirementFormSet
    extra = 1
    fields = ["metric", "window", "window_days", "threshold"]


@admin.register(Tier)
class TierAdmin(admin.ModelAdmin):
    list_display = ["name", "rank", "colour_swatch", "combine", "requirement_count"]
    ordering = ["rank"]
    inlines = [RequirementInline]

    def get_queryset(self, request: HttpRequest):  # type: ignore[no-untyped-def]
        return (
            super().get_queryset(request).annotate(_requirements=Count("requirements"))
        )

    @admin.display(description=_("colour"))
    def colour_swatch(self, tier: Tier) -> str:
        return format_html(
            '<span style="display:inline-block;width:1.2em;height:1.2em;'
            'border-radius:50%;background:{}"></span> {}',
            tier.colour,
            tier.colour,
        )

    @admin.display(description=_("requirements"), ordering="_requirements")
    def requirement_count(self, tier: Tier) -> int:
        return tier._requirements  # type: ignore[attr-defined]

    def changelist_view(self, request: HttpRequest, extra_context=None):  # type: ignore[no-untyped-def]
        for problem in ladder_problems(current_ladder()):
            messages.warning(request, problem.message)
        return super().changelist_view(request, extra_context)


@admin.register(GrowthWeight)
class GrowthWeightAdmin(admin.ModelAdmin):
    list_display = ["kind", "points_per_event", "points_per_unit"]
    list_select_related = ["kind"]


@admin.register(TierChange)
class TierChangeAdmin(admin.ModelAdmin):
    list_display = ["member", "from_tier", "to_tier", "reason", "changed_at", "as_of"]
    list_filter = ["reason", "to_tier"]
    # The member and both tiers are shown on every row.
    list_select_related = ["member", "from_tier", "to_tier"]
    date_hierarchy = "changed_at"
    search_fields = ["member__name", "member__identities__external_id"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False
