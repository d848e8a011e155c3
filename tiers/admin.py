"""Admin for tiers, rule versions and tier history.

Staff edit a draft rule version on one page, then simulate, publish or copy
it through the buttons on that page. Each of those views checks permissions
and calls one service (tiers.rules, tiers.simulation, tiers.publishing,
tiers.validation); the tier rules themselves are applied only by those
services.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib
import importlib.util
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import FieldDoesNotExist, PermissionDenied
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone, translation
from django.utils.html import format_html
from django.utils.text import Truncator
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from simple_history.admin import SimpleHistoryAdmin

from members.admin_guards import FreeTextLookupGuard
from members.audit import record_event
from members.models import ActivityKind, AuditAction, Channel, Member
from members.privacy import can_view_personal_data, mask_name, mask_text
from tiers.formatting import format_metric_value
from tiers.ladder import Ladder, LadderError
from tiers.metrics import program_zone
from tiers.models import (
    GrowthWeight,
    Metric,
    Requirement,
    ReviewWarning,
    RuleGroup,
    RuleVersion,
    Tier,
    TierChange,
    TierOverride,
    TierRule,
    Window,
)
from tiers.overrides import (
    OverrideError,
    approve,
    check_request,
    reject,
    request_override,
)
from tiers.publishing import PublishError, publish
from tiers.rendering import render_version, render_weights
from tiers.rules import copy_to_draft, next_number
from tiers.simulation import SimulationResult, movers_workbook, simulate
from tiers.validation import version_problems
from tiers.warnings import warning_text

EDIT_PERMISSION = "tiers.change_ruleversion"
VIEW_PERMISSION = "tiers.view_ruleversion"
PUBLISH_PERMISSION = "tiers.publish_ruleversion"
# The simulation page lists this many movers; the Excel export lists all.
MOVERS_ON_PAGE = 200
# Rows of any one list shown on the fairness report page.
FAIRNESS_ROWS_ON_PAGE = 200
XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

POLICY_EXPLANATIONS = {
    RuleVersion.Policy.REEVALUATE: _(
        "A background job re-evaluates every member when the version takes "
        "effect, so tiers can go up or down at once."
    ),
    RuleVersion.Policy.NEW_ACTIVITY: _(
        "Members keep their current tier until they record activity after the "
        "version takes effect; from then on the new rules decide their tier."
    ),
    RuleVersion.Policy.GRANDFATHER: _(
        "No member drops below a tier held before the version took effect; "
        "promotions apply at each member's next evaluation. The protection "
        "lasts while this version is in effect."
    ),
}


def can_edit_rules(request: HttpRequest) -> bool:
    return request.user.has_perm(EDIT_PERMISSION)


def can_publish(request: HttpRequest) -> bool:
    """Return whether the user may publish. Active superusers always may."""
    return request.user.has_perm(PUBLISH_PERMISSION)


class GuardedHistoryAdmin(FreeTextLookupGuard, SimpleHistoryAdmin):
    """SimpleHistoryAdmin whose revert form saves only for users who may edit.

    simple-history 3.13 saves a POST to its revert form for anyone who may
    view the history, and checks the historical copy of the object instead
    of the current one. Here the current object decides.
    """

    def history_form_view(
        self,
        request: HttpRequest,
        object_id: str,
        version_id: str,
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if request.method == "POST":
            current = self.get_object(request, unquote(object_id))
            if (
                current is None
                or self.revert_disabled(request, current)
                or not self.has_change_permission(request, current)
            ):
                raise PermissionDenied
        return super().history_form_view(request, object_id, version_id, extra_context)


@admin.register(Tier)
class TierAdmin(GuardedHistoryAdmin):
    list_display = ["name", "rank", "colour_swatch"]
    ordering = ["rank"]

    @admin.display(description=_("colour"))
    def colour_swatch(self, tier: Tier) -> str:
        return format_html(
            '<span style="display:inline-block;width:1.2em;height:1.2em;'
            'border-radius:50%;vertical-align:middle;background:{}"></span> {}',
            tier.colour,
            tier.colour,
        )


# Inlines: the parts of a version, editable while it is a draft.


class VersionPartForm(forms.ModelForm):
    """A form for one part of a version, offering only that version's groups."""

    group_fields = ("entry", "retention", "parent", "group")

    def __init__(
        self, *args: Any, version: RuleVersion | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if version is not None and version.pk is not None:
            groups = RuleGroup.objects.filter(version=version)
        else:
            groups = RuleGroup.objects.none()
        for name in self.group_fields:
            field = self.fields.get(name)
            if isinstance(field, forms.ModelChoiceField):
                field.queryset = groups


class VersionPartFormSet(BaseInlineFormSet):
    def get_form_kwargs(self, index: int | None) -> dict[str, Any]:
        kwargs = super().get_form_kwargs(index)
        kwargs["version"] = self.instance
        return kwargs


class RuleGroupFormSet(VersionPartFormSet):
    """Group rows whose "inside group" choices may not form a loop."""

    def clean(self) -> None:
        super().clean()
        if self.instance.pk is None:
            return
        parents: dict[int, int | None] = dict(
            RuleGroup.objects.filter(version=self.instance).values_list(
                "pk", "parent_id"
            )
        )
        edited = []
        for form in self.forms:
            group_id = form.instance.pk
            if group_id is None or not hasattr(form, "cleaned_data"):
                continue
            parent = form.cleaned_data.get("parent")
            parents[group_id] = parent.pk if parent else None
            edited.append(form)
        for form in edited:
            if _has_loop(form.instance.pk, parents):
                form.add_error(
                    "parent",
                    gettext(
                        "A group cannot sit inside itself or inside one of its "
                        "own subgroups. Pick another group or leave it empty."
                    ),
                )


def _has_loop(group_id: int, parents: dict[int, int | None]) -> bool:
    seen = {group_id}
    current = parents.get(group_id)
    while current is not None:
        if current in seen:
            return True
        seen.add(current)
        current = parents.get(current)
    return False


class VersionPartInline(admin.TabularInline):
    """An inline whose permissions follow the rule version's.

    A rule editor needs only the change permission on rule versions, and no
    part of a published version can be added, changed or deleted.
    """

    form = VersionPartForm
    formset = VersionPartFormSet
    extra = 0

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.has_perm(VIEW_PERMISSION) or can_edit_rules(request)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _may_edit_parts(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _may_edit_parts(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _may_edit_parts(request, obj)


def _may_edit_parts(request: HttpRequest, version: RuleVersion | None) -> bool:
    if version is not None and not version.is_draft:
        return False
    return can_edit_rules(request)


class TierRuleInline(VersionPartInline):
    model = TierRule
    fields = [
        "tier",
        "entry",
        "retention",
        "validity",
        "validity_months",
        "downgrade",
        "grace_days",
        "demote_between_reviews",
    ]
    verbose_name_plural = _("tiers in this version")

    def get_queryset(self, request: HttpRequest) -> QuerySet[TierRule]:
        return super().get_queryset(request).select_related("tier")


class RuleGroupInline(VersionPartInline):
    model = RuleGroup
    fk_name = "version"
    formset = RuleGroupFormSet
    fields = ["label", "operator", "at_least", "parent", "position"]


class RequirementInline(VersionPartInline):
    model = Requirement
    fk_name = "version"
    fields = ["group", "metric", "window", "window_days", "threshold", "position"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Requirement]:
        return super().get_queryset(request).order_by("group_id", "position", "pk")


class GrowthWeightInline(VersionPartInline):
    model = GrowthWeight
    fk_name = "version"
    fields = [
        "kind",
        "channel",
        "points_per_event",
        "points_per_unit",
        "daily_cap",
        "window_cap",
    ]


# Forms of the version's own pages.


class PublishForm(forms.Form):
    NOW = "now"
    LATER = "later"

    reason = forms.CharField(
        label=_("Reason"),
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_("Why these rules change. Stored with the version's history."),
    )
    policy = forms.ChoiceField(
        label=_("Existing members"), widget=forms.RadioSelect, choices=()
    )
    starts = forms.ChoiceField(
        label=_("Takes effect"),
        widget=forms.RadioSelect,
        choices=[(NOW, _("Now")), (LATER, _("At a later date and time"))],
        initial=NOW,
    )
    effective_at = forms.DateTimeField(
        label=_("Date and time"),
        required=False,
        widget=forms.DateTimeInput(
            attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"
        ),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        policy = self.fields["policy"]
        assert isinstance(policy, forms.ChoiceField)
        policy.choices = [
            (
                choice.value,
                format_html(
                    "<strong>{}</strong><br><span class='policy-explanation'>{}</span>",
                    choice.label,
                    POLICY_EXPLANATIONS[choice],
                ),
            )
            for choice in RuleVersion.Policy
        ]
        self.fields["effective_at"].help_text = gettext(
            "Read in the program time zone, %(zone)s."
        ) % {"zone": settings.TIME_ZONE}

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("starts") == self.LATER and not data.get("effective_at"):
            self.add_error(
                "effective_at", gettext("Enter the date and time it takes effect.")
            )
        return data

    @property
    def effective_from(self) -> dt.datetime | None:
        """Return the chosen moment, or None for now."""
        if self.cleaned_data.get("starts") != self.LATER:
            return None
        return self.cleaned_data["effective_at"]


# The rule version admin.


@admin.register(RuleVersion)
class RuleVersionAdmin(GuardedHistoryAdmin):
    list_display = [
        "number",
        "status",
        "in_effect",
        "effective_from",
        "policy",
        "published_by",
        "note_summary",
    ]
    # published_by is shown on every row; the join replaces a query per row.
    list_select_related = ["published_by"]
    # The page has no filters or search, so a second, unfiltered count is waste.
    show_full_result_count = False
    readonly_fields = [
        "number",
        "status",
        "based_on",
        "created_by",
        "created_at",
        "published_by",
        "published_at",
        "effective_from",
        "policy",
        "publish_reason",
    ]
    inlines = [TierRuleInline, RuleGroupInline, RequirementInline, GrowthWeightInline]
    change_form_template = "admin/tiers/ruleversion/change_form.html"

    def get_fieldsets(
        self, request: HttpRequest, obj: RuleVersion | None = None
    ) -> list[tuple[Any, dict[str, Any]]]:
        fieldsets: list[tuple[Any, dict[str, Any]]] = [
            (None, {"fields": ["number", "status", "note"]}),
        ]
        if obj is not None and not obj.is_draft:
            publishing = [
                "published_by",
                "published_at",
                "effective_from",
                "policy",
                "publish_reason",
            ]
            fieldsets.append((_("Publishing"), {"fields": publishing}))
        origin = ["based_on", "created_by", "created_at"]
        fieldsets.append((_("Origin"), {"fields": origin}))
        return fieldsets

    def get_queryset(self, request: HttpRequest) -> QuerySet[RuleVersion]:
        # A version in effect now is superseded once a later one takes effect,
        # ordered as RuleVersionQuerySet.in_effect orders them. One EXISTS
        # subquery marks that for every row instead of a query per row.
        later_in_effect = RuleVersion.objects.filter(
            status=RuleVersion.Status.PUBLISHED, effective_from__lte=timezone.now()
        ).filter(
            Q(effective_from__gt=OuterRef("effective_from"))
            | Q(
                effective_from=OuterRef("effective_from"), number__gt=OuterRef("number")
            )
        )
        return (
            super().get_queryset(request).annotate(superseded=Exists(later_in_effect))
        )

    @admin.display(description=_("in effect now"), boolean=True)
    def in_effect(self, version: RuleVersion) -> bool:
        if version.is_draft or version.effective_from is None:
            return False
        if version.effective_from > timezone.now():
            return False
        return not getattr(version, "superseded", False)

    @admin.display(description=_("what changes"))
    def note_summary(self, version: RuleVersion) -> str:
        return Truncator(version.note).chars(80)

    def has_change_permission(
        self, request: HttpRequest, obj: RuleVersion | None = None
    ) -> bool:
        if obj is not None and not obj.is_draft:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(
        self, request: HttpRequest, obj: RuleVersion | None = None
    ) -> bool:
        if obj is not None and not obj.is_draft:
            return False
        return super().has_delete_permission(request, obj)

    def revert_disabled(self, request: HttpRequest, obj: Any = None) -> bool:
        # A historical copy carries the status and publishing fields, so a
        # revert could turn a published version back into a draft.
        return True

    def save_model(
        self, request: HttpRequest, obj: RuleVersion, form: Any, change: bool
    ) -> None:
        if not change:
            obj.number = next_number()
            obj.created_by_id = request.user.pk
        super().save_model(request, obj, form, change)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        version = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if version is not None:
            context.update(self._version_page_context(request, version))
        return super().change_view(request, object_id, form_url, context)

    def _version_page_context(
        self, request: HttpRequest, version: RuleVersion
    ) -> dict[str, Any]:
        plain_rules, ladder_error = render_plain_rules(version)
        return {
            "problems": version_problems(version),
            "plain_rules": plain_rules,
            "ladder_error": ladder_error,
            "can_edit_rules": can_edit_rules(request),
            "can_publish": can_publish(request) and version.is_draft,
            "has_fairness_report": has_fairness_report(),
        }

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        custom = [
            path(
                "<int:object_id>/copy/",
                wrap(self.copy_view),
                name="tiers_ruleversion_copy",
            ),
            path(
                "<int:object_id>/simulate/",
                wrap(self.simulate_view),
                name="tiers_ruleversion_simulate",
            ),
            path(
                "<int:object_id>/simulate/movers.xlsx",
                wrap(self.movers_export_view),
                name="tiers_ruleversion_movers_export",
            ),
            path(
                "<int:object_id>/fairness/",
                wrap(self.fairness_view),
                name="tiers_ruleversion_fairness",
            ),
            path(
                "<int:object_id>/publish/",
                wrap(self.publish_view),
                name="tiers_ruleversion_publish",
            ),
            path(
                "<int:object_id>/rules-history/",
                wrap(self.rules_history_view),
                name="tiers_ruleversion_rules_history",
            ),
        ]
        return custom + super().get_urls()

    # Views on one version. Each checks permissions and calls one service.

    def copy_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        source = self._version_or_404(request, object_id)
        if not can_edit_rules(request):
            raise PermissionDenied

        draft = copy_to_draft(source, user=request.user)

        self.message_user(
            request,
            gettext("Version %(draft)d is a new draft copied from version %(source)d.")
            % {"draft": draft.number, "source": source.number},
            messages.SUCCESS,
        )
        return HttpResponseRedirect(_change_url(draft))

    def simulate_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        version = self._version_or_404(request, object_id)
        if not can_edit_rules(request):
            raise PermissionDenied

        # NOTE: the simulation evaluates every member inside this request, so
        # its time grows with the member count.
        try:
            result = simulate(version)
            labels = metric_labels(version)
        except LadderError as error:
            self.message_user(request, str(error), messages.ERROR)
            return HttpResponseRedirect(_change_url(version))

        context = {
            **self._page_context(request, version, gettext("Simulate")),
            "result": result,
            "matrix": matrix_table(result),
            "totals": simulation_totals(result),
            "metric_headers": [labels.get(key, key) for key in result.metric_keys],
            "movers": mover_rows(
                result,
                MOVERS_ON_PAGE,
                masked=not can_view_personal_data(request.user),
            ),
            "movers_limit": MOVERS_ON_PAGE,
            "can_publish": can_publish(request) and version.is_draft,
            "has_fairness_report": has_fairness_report(),
        }
        return TemplateResponse(
            request, "admin/tiers/ruleversion/simulate.html", context
        )

    def movers_export_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        version = self._version_or_404(request, object_id)
        if not can_edit_rules(request):
            raise PermissionDenied

        # The export simulates again, so it reflects the ledger at download time.
        try:
            masked = not can_view_personal_data(request.user)
            result = simulate(version)
            workbook = movers_workbook(result, masked=masked)
            record_event(
                request.user,
                AuditAction.EXPORT,
                count=len(result.movers),
                detail={"export": "simulation movers", "version": version.pk},
            )
        except LadderError as error:
            self.message_user(request, str(error), messages.ERROR)
            return HttpResponseRedirect(_change_url(version))

        filename = f"rule-version-{version.number}-movers.xlsx"
        return HttpResponse(
            workbook,
            content_type=XLSX_CONTENT_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    def fairness_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        version = self._version_or_404(request, object_id)
        if not can_edit_rules(request):
            raise PermissionDenied
        if not has_fairness_report():
            raise Http404("tiers.fairness is missing, so there is no fairness report.")

        fairness = importlib.import_module("tiers.fairness")
        try:
            report = fairness.fairness_report(version)
        except LadderError as error:
            self.message_user(request, str(error), messages.ERROR)
            return HttpResponseRedirect(_change_url(version))

        context = {
            **self._page_context(request, version, gettext("Fairness report")),
            "sections": report_sections(report, FAIRNESS_ROWS_ON_PAGE),
        }
        return TemplateResponse(
            request, "admin/tiers/ruleversion/fairness.html", context
        )

    def publish_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        version = self._version_or_404(request, object_id)
        if not can_publish(request):
            raise PermissionDenied
        if not version.is_draft:
            self.message_user(
                request,
                gettext(
                    "Version %(number)d is already published. Copy it to a new "
                    "draft to change the rules."
                )
                % {"number": version.number},
                messages.WARNING,
            )
            return HttpResponseRedirect(_change_url(version))

        publish_errors: list[str] = []
        # Typed dates and times are read in the program time zone.
        with timezone.override(program_zone()):
            form = PublishForm(request.POST if request.method == "POST" else None)
            if form.is_valid():
                try:
                    published = publish(
                        version,
                        user=request.user,
                        reason=form.cleaned_data["reason"],
                        policy=form.cleaned_data["policy"],
                        effective_from=form.effective_from,
                    )
                except PublishError as error:
                    publish_errors = list(error.messages)
                else:
                    self.message_user(
                        request, published_message(published), messages.SUCCESS
                    )
                    return HttpResponseRedirect(
                        reverse("admin:tiers_ruleversion_changelist")
                    )

        context = {
            **self._page_context(request, version, gettext("Publish")),
            "form": form,
            "publish_errors": publish_errors,
            "problems": version_problems(version),
            "time_zone": settings.TIME_ZONE,
        }
        return TemplateResponse(
            request, "admin/tiers/ruleversion/publish.html", context
        )

    def rules_history_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        version = self._version_or_404(request, object_id)

        context = {
            **self._page_context(request, version, gettext("Rules history")),
            "entries": rules_history(version),
        }
        return TemplateResponse(
            request, "admin/tiers/ruleversion/rules_history.html", context
        )

    def _version_or_404(self, request: HttpRequest, object_id: int) -> RuleVersion:
        version = self.get_object(request, str(object_id))
        if version is None:
            raise Http404(f"Rule version id={object_id} does not exist.")
        if not self.has_view_or_change_permission(request, version):
            raise PermissionDenied
        return version

    def _page_context(
        self, request: HttpRequest, version: RuleVersion, action: str
    ) -> dict[str, Any]:
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": version,
            "title": f"{version} · {action}",
            "action": action,
            "change_url": _change_url(version),
        }


def _change_url(version: RuleVersion) -> str:
    return reverse("admin:tiers_ruleversion_change", args=[version.pk])


def published_message(version: RuleVersion) -> str:
    assert version.effective_from is not None
    local = timezone.localtime(version.effective_from, program_zone())
    message = gettext(
        "Version %(number)d is published and takes effect %(when)s (%(zone)s)."
    ) % {
        "number": version.number,
        "when": f"{local:%Y-%m-%d %H:%M}",
        "zone": settings.TIME_ZONE,
    }
    if version.policy == RuleVersion.Policy.REEVALUATE:
        message += " " + gettext(
            "Every member is re-evaluated by a background job at that moment."
        )
    return message


@admin.register(TierChange)
class TierChangeAdmin(FreeTextLookupGuard, admin.ModelAdmin):
    list_display = [
        "member",
        "from_tier",
        "to_tier",
        "reason",
        "review_at",
        "version",
        "changed_at",
        "as_of",
    ]
    list_filter = ["reason", "to_tier"]
    # The member, both tiers and the version are shown on every row.
    list_select_related = ["member", "from_tier", "to_tier", "version"]
    date_hierarchy = "changed_at"
    search_fields = ["member__id__exact", "member__identities__external_id"]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# Page content built from service results, kept apart from the views.


def render_plain_rules(
    version: RuleVersion,
) -> tuple[list[dict[str, Any]], str]:
    """Return the version's rules and weights in words per language, or an error.

    The error is the LadderError message when the version cannot be loaded,
    e.g. because it has no tiers yet.
    """
    try:
        ladder = Ladder.load(version)
    except LadderError as error:
        return [], str(error)

    weights = list(
        GrowthWeight.objects.filter(version=version).select_related("kind", "channel")
    )
    languages = []
    for code, name in settings.LANGUAGES:
        rows = [
            {"tier": tier, "entry": entry, "retention": retention}
            for tier, entry, retention in render_version(ladder, code)
        ]
        languages.append(
            {
                "code": code,
                "name": name,
                "rows": rows,
                "weights": render_weights(weights, code),
            }
        )
    return languages, ""


def has_fairness_report() -> bool:
    """Return whether tiers.fairness, which the fairness page shows, exists."""
    return importlib.util.find_spec("tiers.fairness") is not None


def metric_labels(version: RuleVersion) -> dict[str, str]:
    """Return a heading per metric key, e.g. "net spend, last 365 days"."""
    labels = {}
    for spec in Ladder.load(version).specs:
        window = spec.window
        if window.kind == Window.ROLLING_DAYS:
            window_words = gettext("last %(days)d days") % {"days": window.days or 0}
        else:
            window_words = str(Window(window.kind).label)
        labels[spec.key] = f"{Metric(spec.metric).label}, {window_words}"
    return labels


def matrix_table(result: SimulationResult) -> dict[str, Any]:
    """Lay out the movement matrix with row and column totals.

    Each cell is (count, stays), where ``stays`` marks the diagonal: members
    whose tier would not change.
    """
    rows = []
    column_totals = [0] * len(result.tier_names)
    for source, counts, up, down in result.rows():
        cells = [
            (count, source == target)
            for count, target in zip(counts, result.tier_names, strict=True)
        ]
        for index, count in enumerate(counts):
            column_totals[index] += count
        rows.append(
            {
                "source": source,
                "cells": cells,
                "total": sum(counts),
                "up": up,
                "down": down,
            }
        )
    return {
        "targets": result.tier_names,
        "rows": rows,
        "column_totals": column_totals,
        "total": sum(column_totals),
        "up": sum(row["up"] for row in rows),
        "down": sum(row["down"] for row in rows),
    }


def simulation_totals(result: SimulationResult) -> dict[str, int]:
    up = sum(result.up_from.values())
    down = sum(result.down_from.values())
    new = sum(1 for mover in result.movers if mover.direction == "new")
    return {
        "evaluated": result.evaluated,
        "moved": result.moved,
        "up": up,
        "down": down,
        "new": new,
        "unchanged": result.evaluated - result.moved,
    }


def _mover_name(name: str | None, masked: bool) -> str:
    return mask_name(name or "") if masked else name or ""


DIRECTION_LABELS = {"up": _("up"), "down": _("down"), "new": _("first tier")}


def mover_rows(
    result: SimulationResult, limit: int, *, masked: bool = True
) -> list[dict[str, Any]]:
    """Return the first ``limit`` movers with names and formatted metrics.

    Names are masked unless ``masked`` is false.
    """
    movers = result.movers[:limit]
    names = dict(
        Member.objects.filter(pk__in=[m.member_id for m in movers]).values_list(
            "pk", "name"
        )
    )
    rows = []
    for mover in movers:
        values = []
        for key in result.metric_keys:
            metric = key.split("__", 1)[0]
            value = mover.metrics.get(key, Decimal(0))
            values.append(format_metric_value(metric, value))
        rows.append(
            {
                "member_id": mover.member_id,
                "name": _mover_name(names.get(mover.member_id), masked)
                or f"#{mover.member_id}",
                "url": reverse("admin:members_member_change", args=[mover.member_id]),
                "from_tier": mover.from_tier,
                "to_tier": mover.to_tier,
                "direction": mover.direction,
                "direction_label": DIRECTION_LABELS.get(
                    mover.direction, mover.direction
                ),
                "values": values,
            }
        )
    return rows


# TODO: format amounts with tiers.formatting.format_money and translate the
# headings; they are built from the report's field names and raw values.
def report_sections(report: Any, limit: int) -> list[dict[str, Any]]:
    """Lay out any dataclass report as titled sections, without knowing its fields.

    A mapping or a nested dataclass becomes a two-column table, a sequence
    becomes a table with one column per field of its items (at most ``limit``
    rows), and anything else becomes a single value.
    """
    if not _is_instance(report):
        return [{"title": "", "kind": "value", "value": report}]
    sections: list[dict[str, Any]] = []
    for field in dataclasses.fields(report):
        value = getattr(report, field.name)
        title = _heading(field.name)
        if _is_instance(value):
            value = {
                _heading(f.name): getattr(value, f.name)
                for f in dataclasses.fields(value)
            }
        if isinstance(value, dict):
            sections.append(
                {"title": title, "kind": "mapping", "items": list(value.items())}
            )
        elif isinstance(value, list | tuple):
            headers, rows = _table(value[:limit])
            sections.append(
                {
                    "title": title,
                    "kind": "table",
                    "headers": headers,
                    "rows": rows,
                    "shown": len(rows),
                    "count": len(value),
                }
            )
        else:
            sections.append({"title": title, "kind": "value", "value": value})
    return sections


def _heading(name: str) -> str:
    return name.replace("_", " ").capitalize()


def _is_instance(value: Any) -> bool:
    """Return whether ``value`` is a dataclass instance, not a dataclass type."""
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _table(items: Sequence[Any]) -> tuple[list[str], list[list[Any]]]:
    if not items:
        return [], []
    first = items[0]
    if _is_instance(first):
        names = [field.name for field in dataclasses.fields(first)]
        rows = [[getattr(item, name) for name in names] for item in items]
        return [_heading(name) for name in names], rows
    if isinstance(first, dict):
        keys = list(first)
        rows = [[item.get(key) for key in keys] for item in items]
        return [_heading(str(key)) for key in keys], rows
    if isinstance(first, list | tuple):
        return [], [list(item) for item in items]
    return [], [[item] for item in items]


# The rules history: every historical row of a version's parts.

HISTORY_TYPES = {"+": _("added"), "~": _("changed"), "-": _("deleted")}
# Fields of the historical models that are bookkeeping, not rules.
HISTORY_SKIP = {"id", "version", "history_id", "history_date", "history_user"}


def rules_history(version: RuleVersion) -> list[dict[str, Any]]:
    """Return every recorded change to the version and its parts, newest first.

    Each entry names the user, the part, what happened and, for changes, each
    field's old and new value. Deleted parts are included.
    """
    names = _history_names(version)
    entries = []
    models: Iterable[tuple[type[Any], str]] = [
        (RuleVersion, "id"),
        (TierRule, "version_id"),
        (RuleGroup, "version_id"),
        (Requirement, "version_id"),
        (GrowthWeight, "version_id"),
    ]
    for model, version_field in models:
        records = (
            model.history.filter(**{version_field: version.pk})
            .select_related("history_user")
            .order_by("id", "history_date", "history_id")
        )
        previous = None
        for record in records:
            if previous is not None and previous.id != record.id:
                previous = None
            changes: list[dict[str, str]] = []
            if previous is not None and record.history_type == "~":
                changes = _changed_fields(model, previous, record, names)
            entries.append(
                {
                    "when": record.history_date,
                    "user": record.history_user,
                    "part": model._meta.verbose_name,
                    "name": _part_name(model, record, names),
                    "action": HISTORY_TYPES.get(record.history_type, ""),
                    "reason": record.history_change_reason or "",
                    "changes": changes,
                }
            )
            previous = record
    entries.sort(key=lambda entry: entry["when"], reverse=True)
    return entries


def _changed_fields(
    model: type[Any], old: Any, new: Any, names: dict[str, dict[Any, str]]
) -> list[dict[str, str]]:
    """Return each tracked field whose value differs between two history rows.

    simple-history's diff_against is not used because it compares only
    editable fields, and status, policy and the publishing fields are not.
    """
    changes = []
    for field in old.tracked_fields:
        if field.name in HISTORY_SKIP:
            continue
        before = getattr(old, field.attname)
        after = getattr(new, field.attname)
        if before == after:
            continue
        changes.append(
            {
                "field": _field_label(model, field.name),
                "old": _history_value(names, field, before),
                "new": _history_value(names, field, after),
            }
        )
    return changes


def _history_names(version: RuleVersion) -> dict[str, dict[Any, str]]:
    """Return display names by id for the foreign keys in a version's history."""
    groups: dict[Any, str] = {}
    for group_id, label in (
        RuleGroup.history.filter(version_id=version.pk)
        .order_by("history_date")
        .values_list("id", "label")
    ):
        groups[group_id] = label or f"#{group_id}"
    user_ids = {version.created_by_id, version.published_by_id} - {None}
    users = {
        user.pk: user.get_username()
        for user in get_user_model().objects.filter(pk__in=user_ids)
    }
    return {
        "created_by": users,
        "published_by": users,
        "group": groups,
        "parent": groups,
        "entry": groups,
        "retention": groups,
        "tier": {pk: name for pk, name in Tier.objects.values_list("pk", "name")},
        "kind": {
            pk: str(name) for pk, name in ActivityKind.objects.values_list("pk", "name")
        },
        "channel": {
            pk: str(name) for pk, name in Channel.objects.values_list("pk", "name")
        },
    }


def _history_value(names: dict[str, dict[Any, str]], field: Any, value: Any) -> str:
    """Format one stored value: a name for an id, a label for a choice."""
    if value is None or value == "":
        return "—"
    if field.name in names:
        return names[field.name].get(value, f"#{value}")
    if field.choices:
        return str(dict(field.flatchoices).get(value, value))
    if isinstance(value, dt.datetime):
        return f"{timezone.localtime(value, program_zone()):%Y-%m-%d %H:%M}"
    return str(value)


def _field_label(model: type[Any], field: str) -> str:
    try:
        return str(model._meta.get_field(field).verbose_name)
    except FieldDoesNotExist:
        return field


def _part_name(model: type[Any], record: Any, names: dict[str, dict[Any, str]]) -> str:
    if model is RuleVersion:
        return gettext("Version %(number)d") % {"number": record.number}
    if model is TierRule:
        return names["tier"].get(record.tier_id, f"#{record.tier_id}")
    if model is RuleGroup:
        return record.label or f"#{record.id}"
    if model is Requirement:
        group = names["group"].get(record.group_id, f"#{record.group_id}")
        metric = Metric(record.metric).label
        return f"{group}: {metric} ≥ {record.threshold}"
    kind = names["kind"].get(record.kind_id, f"#{record.kind_id}")
    if record.channel_id:
        return f"{kind} @ {names['channel'].get(record.channel_id, record.channel_id)}"
    return kind


def admin_user(request: HttpRequest) -> User:
    """Return the logged-in user of an admin request.

    The admin site sends anonymous requests to its login page before any
    view runs, so every admin view sees an authenticated user.
    """
    user = request.user
    if not isinstance(user, User):
        raise PermissionDenied
    return user


class TierOverrideForm(forms.ModelForm):
    """The fields staff fill in to request an override; the service does the rest."""

    class Meta:
        model = TierOverride
        fields = ["member", "tier", "mode", "until", "reason"]

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        if self.errors:
            return cleaned
        try:
            check_request(
                cleaned.get("mode") or "",
                cleaned.get("reason") or "",
                cleaned.get("until"),
                timezone.now(),
            )
        except OverrideError as error:
            raise forms.ValidationError(str(error)) from error
        return cleaned


class TierOverrideActionForm(ActionForm):
    """The changelist's action bar, with the reason the Reject action needs."""

    reason = forms.CharField(
        label=_("Reason for rejecting"), required=False, max_length=500
    )


# Override fields of free text, and the masked stand-ins shown in their place.
MASKED_REASONS = {
    "reason": "masked_reason",
    "rejection_reason": "masked_rejection_reason",
    "end_reason": "masked_end_reason",
}


@admin.register(TierOverride)
class TierOverrideAdmin(GuardedHistoryAdmin):
    """Requests, approvals and rejections, each through tiers.overrides.

    Overrides are never edited after the request: a wrong one is rejected or
    replaced by a new request, so the history shows every decision.
    """

    form = TierOverrideForm
    action_form = TierOverrideActionForm
    list_display = [
        "member",
        "tier",
        "mode",
        "status",
        "until",
        "requested_by",
        "approved_by",
    ]
    list_filter = ["status", "mode", "tier"]
    # The member, tier and both users are shown on every row.
    list_select_related = ["member", "tier", "requested_by", "approved_by"]
    raw_id_fields = ["member"]
    # Reasons often quote a phone, and the search term travels in the URL.
    search_fields = ["member__id__exact"]
    actions = ["approve_selected", "reject_selected"]
    # Shown on an existing override's page, below the fields of the request.
    decision_fields = (
        "status",
        "requested_by",
        "requested_at",
        "approved_by",
        "approved_at",
        "rejected_by",
        "rejected_at",
        "rejection_reason",
        "ended_by",
        "ended_at",
        "end_reason",
    )

    def get_readonly_fields(
        self, request: HttpRequest, obj: TierOverride | None = None
    ) -> Sequence[str]:
        return () if obj is None else self.decision_fields

    def get_fields(
        self, request: HttpRequest, obj: TierOverride | None = None
    ) -> Sequence[Any]:
        # Staff write reasons such as "called from 138...", so staff without
        # the personal data permission see them masked.
        fields = super().get_fields(request, obj)
        if obj is None or can_view_personal_data(request.user):
            return fields
        return [MASKED_REASONS.get(name, name) for name in fields]

    @admin.display(description=_("reason"))
    def masked_reason(self, override: TierOverride) -> str:
        return mask_text(override.reason)

    @admin.display(description=_("rejection reason"))
    def masked_rejection_reason(self, override: TierOverride) -> str:
        return mask_text(override.rejection_reason)

    @admin.display(description=_("end reason"))
    def masked_end_reason(self, override: TierOverride) -> str:
        return mask_text(override.end_reason)

    def history_view(
        self,
        request: HttpRequest,
        object_id: str,
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        # The history pages show every version's reasons unmasked.
        if not can_view_personal_data(request.user):
            raise PermissionDenied
        return super().history_view(request, object_id, extra_context)

    def history_form_view(
        self,
        request: HttpRequest,
        object_id: str,
        version_id: str,
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if not can_view_personal_data(request.user):
            raise PermissionDenied
        return super().history_form_view(request, object_id, version_id, extra_context)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_approve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("tiers.approve_tieroverride")

    def save_model(
        self, request: HttpRequest, obj: TierOverride, form: Any, change: bool
    ) -> None:
        data = form.cleaned_data
        override = request_override(
            data["member"],
            data["tier"],
            data["mode"],
            data["reason"],
            admin_user(request),
            until=data.get("until"),
        )
        # The admin logs and redirects to the object it passed in.
        obj.pk = override.pk
        obj.status = override.status
        obj.requested_by = override.requested_by
        obj.requested_at = override.requested_at
        if override.status == TierOverride.Status.PENDING:
            self.message_user(
                request,
                gettext(
                    "The override waits for approval by another person, because "
                    "%(tier)s needs a second approver."
                )
                % {"tier": override.tier},
                messages.WARNING,
            )

    @admin.action(description=_("Approve"), permissions=["approve"])
    def approve_selected(
        self, request: HttpRequest, queryset: QuerySet[TierOverride]
    ) -> None:
        approved = 0
        for override in queryset.select_related("member", "tier", "requested_by"):
            try:
                approve(override, admin_user(request))
            except OverrideError as error:
                self.message_user(request, str(error), messages.ERROR)
                continue
            approved += 1
        if approved:
            self.message_user(
                request,
                gettext("%(count)d override(s) approved and applied.")
                % {"count": approved},
                messages.SUCCESS,
            )

    @admin.action(description=_("Reject"), permissions=["approve"])
    def reject_selected(
        self, request: HttpRequest, queryset: QuerySet[TierOverride]
    ) -> None:
        reason = request.POST.get("reason", "")
        rejected = 0
        for override in queryset:
            try:
                reject(override, admin_user(request), reason)
            except OverrideError as error:
                self.message_user(request, str(error), messages.ERROR)
                continue
            rejected += 1
        if rejected:
            self.message_user(
                request,
                gettext("%(count)d override(s) rejected.") % {"count": rejected},
                messages.SUCCESS,
            )


def _format_moment(value: dt.datetime) -> str:
    return f"{timezone.localtime(value, program_zone()):%Y-%m-%d %H:%M}"


def _by_user_on(user: User | None, moment: dt.datetime | None) -> str:
    """Format who acted and when, such as "alice, 2024-01-10 09:30"."""
    parts = [user.get_username()] if user is not None else []
    if moment is not None:
        parts.append(_format_moment(moment))
    return ", ".join(parts) or "—"


class TierOverrideInline(admin.TabularInline):
    """The member's overrides, newest first: who requested and decided each,
    when and why, and how it ended.

    Read-only, because overrides change only through tiers.overrides, from
    the tier override pages.
    """

    model = TierOverride
    fk_name = "member"
    # A read-only table without Django's title row per override.
    template = "admin/members/tier_history_inline.html"
    fields = (
        "requested",
        "tier",
        "mode",
        "end_date",
        "reason",
        "status",
        "decision",
        "ending",
    )
    readonly_fields = fields
    ordering = ("-requested_at", "-pk")
    extra = 0
    can_delete = False
    verbose_name_plural = _("tier overrides")

    def get_queryset(self, request: HttpRequest) -> QuerySet[TierOverride]:
        # The tier and up to four users are shown on every row.
        return (
            super()
            .get_queryset(request)
            .select_related(
                "tier", "requested_by", "approved_by", "rejected_by", "ended_by"
            )
        )

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("requested"))
    def requested(self, override: TierOverride) -> str:
        return _by_user_on(override.requested_by, override.requested_at)

    @admin.display(description=_("until"))
    def end_date(self, override: TierOverride) -> str:
        return _format_moment(override.until) if override.until else "—"

    @admin.display(description=_("decision"))
    def decision(self, override: TierOverride) -> str:
        if override.status == TierOverride.Status.REJECTED:
            return format_html(
                "{}<br>{}",
                gettext("Rejected: %(by)s")
                % {"by": _by_user_on(override.rejected_by, override.rejected_at)},
                override.rejection_reason,
            )
        if override.approved_at is not None:
            return gettext("Approved: %(by)s") % {
                "by": _by_user_on(override.approved_by, override.approved_at)
            }
        if override.status == TierOverride.Status.PENDING:
            return "—"
        return gettext("Applied without approval")

    @admin.display(description=_("ended"))
    def ending(self, override: TierOverride) -> str:
        if override.status != TierOverride.Status.ENDED:
            return "—"
        ended = _by_user_on(override.ended_by, override.ended_at)
        end_reason = override.get_end_reason_display()
        # Overrides ended before the end reason was recorded have none.
        return f"{end_reason}: {ended}" if end_reason else ended


# The member page belongs to members.admin. The inline is added from here so
# that the override admin stays in one app. members precedes tiers in
# INSTALLED_APPS, so the member admin is registered before this module loads.
_member_admin_class = type(admin.site.get_model_admin(Member))
_member_admin_class.inlines = [*_member_admin_class.inlines, TierOverrideInline]


@admin.register(ReviewWarning)
class ReviewWarningAdmin(FreeTextLookupGuard, admin.ModelAdmin):
    """Read-only list of the warnings that record_review_warnings() stored."""

    list_display = ["member", "tier", "review_at", "created_at", "text"]
    # The member and the tier are shown on every row, and the text needs the
    # tier's name.
    list_select_related = ["member", "tier"]
    search_fields = ["member__id__exact", "member__identities__external_id"]
    show_full_result_count = False

    @admin.display(description=_("warning"))
    def text(self, warning: ReviewWarning) -> str:
        language = translation.get_language() or settings.LANGUAGE_CODE
        return warning_text(warning, language)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


from tiers import admin_queues  # noqa: E402, F401  registers the work queues
