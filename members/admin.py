"""Admin for members, channels and the activity ledger, with file import.

Import and export use the formats in members.importing.formats and the
resources in members.resources, so the admin's preview and confirm steps
run the same service as the import_members and import_activities commands.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import BooleanField, QuerySet, Value
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from import_export.admin import ImportExportModelAdmin
from import_export.forms import ConfirmImportForm, ImportForm

from members.admin_guards import FreeTextLookupGuard
from members.admin_identity import merged_into_notice
from members.admin_lookup import MemberLookupMixin
from members.audit import record_event, record_events
from members.importing.amounts import DECIMAL_MARK_CHOICES
from members.importing.cleaning import phone_e164
from members.importing.csv_reader import ENCODING_CHOICES
from members.importing.dates import DATE_ORDER_CHOICES
from members.importing.errors import InvalidValue
from members.importing.formats import FORMATS
from members.importing.plausibility import (
    check_occurred_at,
    check_quantity,
    signed_amount,
)
from members.importing.sizes import megabytes, size_limit_message
from members.models import (
    Activity,
    ActivityKind,
    AuditAction,
    Channel,
    ChannelIdentity,
    Member,
)
from members.privacy import (
    MEMBER_FIELD_MASKS,
    can_view_personal_data,
    mask_email,
    mask_name,
    mask_phone,
    member_label,
)
from members.resources import ActivityResource, ImportResult, MemberResource
from tiers.evaluation import MemberEvaluation, evaluate, explain_member
from tiers.explaining import activities_that_counted
from tiers.formatting import format_metric_value
from tiers.ladder import LadderError
from tiers.models import Metric, RuleVersion, TierChange, Window

logger = logging.getLogger(__name__)

# The annotation MemberAdmin.get_queryset adds: whether the request's user
# may see personal data unmasked.
PERSONAL_DATA_VISIBLE = "personal_data_visible"


def _personal_value(member: Member, field: str) -> str:
    """Return a personal field as the list's user may see it, masked by default."""
    value = getattr(member, field)
    if getattr(member, PERSONAL_DATA_VISIBLE, False):
        return value
    return MEMBER_FIELD_MASKS[field](value)


@admin.display(description=_("name"))
def unsorted_name(member: Member) -> str:
    return _personal_value(member, "name")


@admin.display(description=_("phone"))
def unsorted_phone(member: Member) -> str:
    return _personal_value(member, "phone")


@admin.display(description=_("e-mail"))
def unsorted_email(member: Member) -> str:
    return _personal_value(member, "email")


# Staff without the permission get these columns in place of the sortable
# ones: sorting by a masked value (?o=) would reveal its order.
UNSORTED_COLUMNS: dict[str, Any] = {
    "name_column": unsorted_name,
    "phone_column": unsorted_phone,
    "email_column": unsorted_email,
}


class FileImportForm(ImportForm):
    """The library's import form plus the choices detection cannot make."""

    encoding = forms.ChoiceField(
        label=_("Encoding (CSV only)"),
        choices=[("", _("Detect automatically"))] + list(ENCODING_CHOICES),
        required=False,
        help_text=_(
            "Choose one if the import says the encoding could not be detected."
        ),
    )
    date_order = forms.ChoiceField(
        label=_("Date order"),
        choices=[("", _("Detect from the dates"))] + list(DATE_ORDER_CHOICES),
        required=False,
        help_text=_("Needed only when every date such as 03/04/2024 fits both orders."),
    )
    channel = forms.ModelChoiceField(
        label=_("Channel of this file"),
        queryset=Channel.objects.order_by("code"),
        required=False,
        empty_label=_("Read from the file's channel column"),
        help_text=_(
            "The channel's saved column mapping is used to read the headers, and "
            "rows take this channel when the file has no channel column. After "
            "the import, the headers used are saved as the channel's mapping."
        ),
    )

    def clean_import_file(self) -> Any:
        upload = self.cleaned_data["import_file"]
        # The same message as the import commands give, from the same setting.
        too_large = size_limit_message(upload.size)
        if too_large:
            raise ValidationError(too_large)
        # The preview runs inside this request, so a larger file would keep
        # the page loading for minutes and the server's memory high.
        in_request = settings.CRM_IMPORT_ADMIN_MAX_BYTES
        if upload.size > in_request:
            raise ValidationError(
                _(
                    "The file is %(size)s MB, more than the %(limit)s MB this page "
                    "previews at once. Use “Import a large file in the "
                    "background” above: it checks the file in a background "
                    "job and shows its progress."
                )
                % {
                    "size": megabytes(upload.size, round_up=True),
                    "limit": megabytes(in_request),
                }
            )
        return upload


class FileConfirmImportForm(ConfirmImportForm):
    """The confirm step, carrying the choices made on the import form."""

    encoding = forms.CharField(widget=forms.HiddenInput(), required=False)
    date_order = forms.CharField(widget=forms.HiddenInput(), required=False)
    channel = forms.ModelChoiceField(
        queryset=Channel.objects.all(), widget=forms.HiddenInput(), required=False
    )


class ActivityImportForm(FileImportForm):
    """The import form for activities, whose amounts may need a decimal mark."""

    decimal_mark = forms.ChoiceField(
        label=_("Decimal mark"),
        choices=[("", _("Detect from the amounts"))] + list(DECIMAL_MARK_CHOICES),
        required=False,
        help_text=_(
            "Needed only when no amount shows the mark, e.g. when 2.500 could be "
            "2.5 or 2500."
        ),
    )


class ActivityConfirmImportForm(FileConfirmImportForm):
    decimal_mark = forms.CharField(widget=forms.HiddenInput(), required=False)


class FileImportExportAdmin(ImportExportModelAdmin):
    """Import and export through our formats, guarded by members.import/export."""

    import_form_class = FileImportForm
    confirm_form_class = FileConfirmImportForm
    import_template_name = "admin/members/import.html"
    import_result_template_name = "admin/members/import_result.html"
    import_formats = FORMATS
    export_formats = FORMATS
    # Fields of the import form carried to the confirm step and the resource.
    import_choices: tuple[str, ...] = ("encoding", "date_order", "channel")

    def has_import_permission(self, request: HttpRequest) -> bool:
        code = settings.IMPORT_EXPORT_IMPORT_PERMISSION_CODE
        return request.user.has_perm(f"members.{code}")

    def has_export_permission(self, request: HttpRequest) -> bool:
        code = settings.IMPORT_EXPORT_EXPORT_PERMISSION_CODE
        return request.user.has_perm(f"members.{code}")

    def get_confirm_form_initial(self, request: HttpRequest, import_form: Any) -> dict:
        initial = super().get_confirm_form_initial(request, import_form)
        if import_form is not None:
            for name in self.import_choices:
                value = import_form.cleaned_data.get(name)
                # The confirm form carries a chosen channel as its id.
                initial[name] = getattr(value, "pk", value) or ""
        return initial

    def get_import_data_kwargs(self, **kwargs: Any) -> dict:
        form = kwargs.get("form")
        data_kwargs = super().get_import_data_kwargs(**kwargs)
        if form is not None and hasattr(form, "cleaned_data"):
            for name in self.import_choices:
                data_kwargs[name] = form.cleaned_data.get(name, "")
        return data_kwargs

    def get_export_resource_kwargs(self, request: HttpRequest, **kwargs: Any) -> dict:
        # django-import-export 4 passes these to the resource's constructor.
        return {
            **super().get_export_resource_kwargs(request, **kwargs),
            "masked": not can_view_personal_data(request.user),
        }

    def get_data_for_export(
        self, request: HttpRequest, queryset: QuerySet, **kwargs: Any
    ) -> Any:
        """Build the export's rows and record who exported how many."""
        dataset = super().get_data_for_export(request, queryset, **kwargs)
        record_event(
            request.user,
            AuditAction.EXPORT,
            count=len(dataset),
            detail={
                "model": self.opts.model_name,
                "masked": not can_view_personal_data(request.user),
            },
        )
        return dataset

    def import_action(self, request: HttpRequest, **kwargs: Any) -> HttpResponse:
        response = super().import_action(request, **kwargs)
        # The preview's values come from the file and may contain phones and
        # e-mails. The response renders its template later, so the flag set
        # here still applies.
        context = getattr(response, "context_data", None) or {}
        _mask_result_for(request, context.get("result"))
        return response

    def process_result(
        self, result: ImportResult, request: HttpRequest
    ) -> HttpResponse:
        """Show the confirmed import's counts and issues instead of redirecting."""
        _mask_result_for(request, result)
        context = self.admin_site.each_context(request)
        context.update(
            {
                "title": _("Import result"),
                "opts": self.model._meta,
                "result": result,
                "report": result.report,
            }
        )
        request.current_app = self.admin_site.name
        return TemplateResponse(request, [self.import_result_template_name], context)


def _mask_result_for(request: HttpRequest, result: object) -> None:
    if isinstance(result, ImportResult):
        result.masked = not can_view_personal_data(request.user)


def _moment(value: object) -> dt.datetime | None:
    """Return an ISO timestamp from an explanation in the program's zone."""
    if not value:
        return None
    moment = dt.datetime.fromisoformat(str(value))
    return moment if timezone.is_naive(moment) else timezone.localtime(moment)


def _local_date(value: object) -> str:
    moment = _moment(value)
    return moment.date().isoformat() if moment else ""


def _local_minute(value: object) -> str:
    moment = _moment(value)
    return f"{moment:%Y-%m-%d %H:%M}" if moment else ""


def _label(choices: type, value: object) -> str:
    try:
        return str(choices(value).label)  # type: ignore[operator]
    except ValueError:
        return str(value)


def _requirement_rows(check: dict, tier_label: str) -> list[dict[str, object]]:
    """Return one table row per requirement of a tier's entry or retention check."""
    rows = []
    for requirement in check.get("requirements", []):
        metric = requirement.get("metric", "")
        window = _label(Window, requirement.get("window"))
        if requirement.get("days"):
            window = f"{window} ({requirement['days']})"
        rows.append(
            {
                "tier": tier_label,
                "tier_reached": check.get("reached", False),
                "metric": _label(Metric, metric),
                "window": window,
                "start": _local_date(requirement.get("start")),
                "end": _local_date(requirement.get("end")),
                "value": format_metric_value(metric, requirement.get("value", 0)),
                "threshold": format_metric_value(
                    metric, requirement.get("threshold", 0), round_up=True
                ),
                "met": requirement.get("met", False),
            }
        )
    return rows


def _explanation_rows(explanation: dict) -> list[dict[str, object]]:
    rows = []
    for tier in explanation.get("tiers", []):
        rows.extend(_requirement_rows(tier, tier.get("name", "")))
    retention = explanation.get("retention")
    if retention:
        label = _("%(tier)s (retention)") % {"tier": retention.get("name", "")}
        rows.extend(_requirement_rows(retention, str(label)))
    # A due review is judged on the metrics as of its review date.
    review = explanation.get("review")
    if review:
        check = review.get("retention", {})
        label = _("%(tier)s (retention on the review date %(date)s)") % {
            "tier": check.get("name", ""),
            "date": _local_date(review.get("as_of")),
        }
        rows.extend(_requirement_rows(check, str(label)))
    return rows


def render_explanation(explanation: dict | None) -> str:
    """Render a stored tier explanation as a table: each tier's requirements.

    Explanations written since rule versions also carry the version number,
    the retention check of a member's higher tier and the publish policy
    that held a tier, and these are shown when present. The template
    escapes every value and render_to_string returns safe HTML, so the
    admin shows the table instead of its markup.
    """
    if not explanation:
        return format_html("{}", "—")
    held_by = explanation.get("held_by_policy")
    context = {
        "explanation": explanation,
        "rows": _explanation_rows(explanation),
        "as_of": _local_minute(explanation.get("as_of")),
        "version": explanation.get("version"),
        "retention": explanation.get("retention"),
        "held_by_policy": _label(RuleVersion.Policy, held_by) if held_by else "",
    }
    return render_to_string("admin/members/tier_explanation.html", context)


def tier_change_message(evaluation: MemberEvaluation, member: str) -> tuple[str, int]:
    """Return the admin message and its level for a member's new tier."""
    values = {"member": member, "tier": evaluation.tier.name}
    if evaluation.reason == TierChange.Reason.PROMOTION:
        return _("%(member)s was promoted to %(tier)s.") % values, messages.SUCCESS
    if evaluation.reason == TierChange.Reason.DEMOTION:
        return _("%(member)s was demoted to %(tier)s.") % values, messages.WARNING
    return _("%(member)s was placed in %(tier)s.") % values, messages.INFO


class ChannelIdentityInline(admin.TabularInline):
    model = ChannelIdentity
    fields = ("channel", "external_id")
    extra = 0

    def get_queryset(self, request: HttpRequest) -> QuerySet[ChannelIdentity]:
        return super().get_queryset(request).select_related("channel")


class TierChangeInline(admin.TabularInline):
    """Tier history, newest first; written only by tier evaluation."""

    model = TierChange
    # Django's tabular template heads each row with str(TierChange), which
    # reads "None → Silver" for a first placement. This template leaves the
    # title out, because the "change" column shows the transition already.
    template = "admin/members/tier_history_inline.html"
    fields = ("changed_at", "transition", "reason", "as_of", "explanation_html")
    readonly_fields = fields
    ordering = ("-changed_at", "-pk")
    extra = 0
    can_delete = False
    verbose_name_plural = _("tier history")

    def get_queryset(self, request: HttpRequest) -> QuerySet[TierChange]:
        return super().get_queryset(request).select_related("from_tier", "to_tier")

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description=_("change"))
    def transition(self, change: TierChange) -> str:
        start = change.from_tier.name if change.from_tier else "—"
        return f"{start} → {change.to_tier.name}"

    @admin.display(description=_("explanation"))
    def explanation_html(self, change: TierChange) -> str:
        return render_explanation(change.explanation)


def _parse_why_date(value: str) -> tuple[dt.datetime, str]:
    """Read the page's date as the end of that day; return now and a message if invalid."""
    now = timezone.now()
    if not value:
        return now, ""
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        return now, _("%(value)s is not a date; use YYYY-MM-DD.") % {"value": value}
    moment = dt.datetime.combine(
        day, dt.time.max, tzinfo=timezone.get_current_timezone()
    )
    if moment > now:
        return now, ""
    return moment, ""


@admin.register(Member)
class MemberAdmin(MemberLookupMixin, FileImportExportAdmin):
    resource_classes = [MemberResource]
    list_display = (
        "name_column",
        "phone_column",
        "email_column",
        "tier",
        "tier_since",
        "joined_on",
    )
    # The tier column would otherwise cost one query per row.
    list_select_related = ("tier",)
    list_filter = ("tier", "language")
    # The search term travels in the URL (?q=), so it covers only the member
    # id and channel ids. Phones and e-mails are looked up through the POST
    # form of MemberLookupMixin.
    search_fields = ("id__exact", "identities__external_id")
    # Tier evaluation alone sets the tier and its review and grace dates.
    readonly_fields = (
        "phone_e164",
        "tier",
        "tier_since",
        "review_at",
        "grace_until",
        "current_evaluation",
        "merged_into_line",
    )
    # Adds a "Suspected duplicates" button; django-import-export extends this
    # template with its import and export buttons.
    change_list_template = "admin/members/duplicates_member_change_list.html"
    fieldsets = (
        (
            None,
            {
                "fields": (
                    "merged_into_line",
                    "name",
                    "phone",
                    "phone_e164",
                    "email",
                    "language",
                    "joined_on",
                )
            },
        ),
        (
            _("Tier"),
            {
                "fields": (
                    "tier",
                    "tier_since",
                    "review_at",
                    "grace_until",
                    "current_evaluation",
                )
            },
        ),
    )
    inlines = (ChannelIdentityInline, TierChangeInline)

    def lookup_allowed(
        self, lookup: str, value: str, request: HttpRequest | None = None
    ) -> bool:
        # Django's admin accepts any lookup on the model's own fields from the
        # query string. Filtering on a personal field would put it into the
        # URL and let staff who see it masked recover it a prefix at a time.
        if lookup.split(LOOKUP_SEP, 1)[0] in MEMBER_FIELD_MASKS:
            return False
        return super().lookup_allowed(lookup, value, request)

    def get_list_display(self, request: HttpRequest) -> Any:
        columns = super().get_list_display(request)
        if can_view_personal_data(request.user):
            return columns
        return tuple(UNSORTED_COLUMNS.get(column, column) for column in columns)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Member]:
        # The list columns below read this flag, because a display method
        # receives the member but not the request.
        visible = can_view_personal_data(request.user)
        return (
            super()
            .get_queryset(request)
            .annotate(**{PERSONAL_DATA_VISIBLE: Value(visible, BooleanField())})
        )

    @admin.display(description=_("name"), ordering="name")
    def name_column(self, member: Member) -> str:
        return _personal_value(member, "name")

    @admin.display(description=_("phone"), ordering="phone")
    def phone_column(self, member: Member) -> str:
        return _personal_value(member, "phone")

    @admin.display(description=_("e-mail"), ordering="email")
    def email_column(self, member: Member) -> str:
        return _personal_value(member, "email")

    # Shown on the change page in place of the fields, read-only, to staff
    # without the permission.
    @admin.display(description=_("name"))
    def masked_name(self, member: Member) -> str:
        return mask_name(member.name)

    @admin.display(description=_("phone"))
    def masked_phone(self, member: Member) -> str:
        return mask_phone(member.phone)

    @admin.display(description=_("phone (E.164)"))
    def masked_phone_e164(self, member: Member) -> str:
        return mask_phone(member.phone_e164)

    @admin.display(description=_("e-mail"))
    def masked_email(self, member: Member) -> str:
        return mask_email(member.email)

    def get_fieldsets(self, request: HttpRequest, obj: Member | None = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or can_view_personal_data(request.user):
            return fieldsets
        masked = []
        for title, options in fieldsets:
            fields = [
                f"masked_{name}" if name in MEMBER_FIELD_MASKS else name
                for name in options["fields"]
            ]
            masked.append((title, {**options, "fields": fields}))
        return masked

    def get_readonly_fields(
        self, request: HttpRequest, obj: Member | None = None
    ) -> Any:
        readonly = tuple(super().get_readonly_fields(request, obj))
        if obj is not None and obj.erased_at is not None:
            # An erased member's personal fields stay empty: typing them
            # back in would undo the erasure.
            return readonly + tuple(MEMBER_FIELD_MASKS)
        if obj is None or can_view_personal_data(request.user):
            return readonly
        # Staff who cannot see the values cannot change them either: the
        # form leaves out every field that is read-only.
        masked = tuple(f"masked_{name}" for name in MEMBER_FIELD_MASKS)
        return readonly + tuple(MEMBER_FIELD_MASKS) + masked

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        self._record_list_view(request, response)
        return response

    def _record_list_view(self, request: HttpRequest, response: HttpResponse) -> None:
        """Record a personal data view of each member on an unmasked list page."""
        if request.method != "GET" or not can_view_personal_data(request.user):
            return
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is None:
            return
        # Evaluates the page's query once; the template reuses its cache.
        member_ids = [member.pk for member in changelist.result_list]
        if member_ids:
            record_events(
                request.user,
                AuditAction.VIEW_PERSONAL,
                member_ids,
                detail={"page": "member list"},
            )

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        response = super().change_view(request, object_id, form_url, extra_context)
        member = getattr(response, "context_data", {}).get("original")
        if (
            request.method == "GET"
            and response.status_code == 200
            and isinstance(member, Member)
            and can_view_personal_data(request.user)
        ):
            record_event(
                request.user,
                AuditAction.VIEW_PERSONAL,
                member,
                detail={"page": "member change"},
            )
        return response

    @admin.display(description=_("merged into"))
    def merged_into_line(self, member: Member) -> str:
        return merged_into_notice(member)

    @admin.display(description=_("current evaluation"))
    def current_evaluation(self, member: Member) -> str:
        if member.pk is None:
            return format_html("{}", "—")
        try:
            evaluation = explain_member(member)
        except LadderError as error:
            return format_html("{}", str(error))
        link = format_html(
            '<p><a href="{}">{}</a></p>',
            reverse("admin:members_member_why", args=[member.pk]),
            _("Why this tier? Check any date"),
        )
        return render_explanation(evaluation.explanation) + link

    def get_urls(self) -> list[URLPattern]:
        why = path(
            "<path:object_id>/why/",
            self.admin_site.admin_view(self.why_view),
            name="members_member_why",
        )
        return [why, *self.lookup_urls(), *super().get_urls()]

    def why_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """Show the evaluation as of any date with the activities that counted."""
        member = self.get_object(request, object_id)
        if member is None or not self.has_view_permission(request, member):
            raise PermissionDenied
        as_of, error = _parse_why_date(request.GET.get("as_of", ""))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": member,
            "title": _("Why is %(member)s in this tier?") % {"member": member},
            "as_of_date": timezone.localtime(as_of).date().isoformat(),
            "error": error,
        }
        try:
            evaluation = explain_member(member, as_of=as_of)
        except LadderError as problem:
            context["error"] = str(problem)
        else:
            explanation = evaluation.explanation or {}
            context["explanation_html"] = render_explanation(explanation)
            context["counted"] = activities_that_counted(member.pk, explanation)
        return TemplateResponse(request, "admin/members/member_why.html", context)

    def save_model(
        self, request: HttpRequest, obj: Member, form: Any, change: bool
    ) -> None:
        # phone_e164 is read-only here, so keep it in step with the phone.
        obj.phone_e164 = phone_e164(obj.phone)
        super().save_model(request, obj, form, change)
        edited = sorted(set(form.changed_data) & set(MEMBER_FIELD_MASKS))
        if change and edited:
            # The field names only: the audit log never stores the values.
            record_event(
                request.user, AuditAction.CHANGE, obj, detail={"fields": edited}
            )


class ActivityAdminForm(forms.ModelForm):
    """The activity form, checked by the same rules as the import and the API.

    A refund entered positive is stored negative, as an import stores it.
    """

    # NOTE: amounts are limited only by the field's size (below 10**12), as in
    # the import and the API. No rule rejects an implausible but storable
    # amount such as 999,999,999,999.99.

    class Meta:
        model = Activity
        fields = (
            "member",
            "channel",
            "kind",
            "occurred_at",
            "amount",
            "quantity",
            "reference",
        )
        help_texts = {
            "amount": _(
                "In the store currency. Refunds may be entered positive or "
                "negative and are stored negative. Visits, reviews and referrals "
                "carry no amount."
            ),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Opening balances come only from their own import, which also sets
        # the carried-over growth value; staff cannot type one in here.
        kinds = ActivityKind.objects.exclude(role=ActivityKind.Role.OPENING)
        if self.instance.pk and self.instance.kind.role == ActivityKind.Role.OPENING:
            kinds = ActivityKind.objects.filter(pk=self.instance.kind_id)
        kind_field = self.fields["kind"]
        assert isinstance(kind_field, forms.ModelChoiceField)
        kind_field.queryset = kinds

    def clean_occurred_at(self) -> dt.datetime:
        moment: dt.datetime = self.cleaned_data["occurred_at"]
        try:
            return check_occurred_at(moment, timezone.now())
        except InvalidValue as error:
            local_time = f"{timezone.localtime(moment):%Y-%m-%d %H:%M}"
            raise ValidationError(f"{local_time} {error.reason}.") from None

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        kind = cleaned.get("kind")
        if kind is None:
            return cleaned
        amount = cleaned.get("amount")
        if amount is not None:
            try:
                cleaned["amount"] = signed_amount(amount, kind)
            except InvalidValue as error:
                self.add_error("amount", f"{amount} {error.reason}.")
        quantity = cleaned.get("quantity")
        if quantity is not None:
            try:
                check_quantity(quantity, kind)
            except InvalidValue as error:
                self.add_error("quantity", f"{quantity} {error.reason}.")
        return cleaned


@admin.register(Activity)
class ActivityAdmin(FreeTextLookupGuard, FileImportExportAdmin):
    form = ActivityAdminForm
    resource_classes = [ActivityResource]
    import_form_class = ActivityImportForm
    confirm_form_class = ActivityConfirmImportForm
    import_choices = (*FileImportExportAdmin.import_choices, "decimal_mark")
    list_display = ("occurred_at", "member", "channel", "kind", "amount", "reference")
    # member, channel and kind are shown on every row.
    list_select_related = ("member", "channel", "kind")
    list_filter = ("kind", "channel")
    date_hierarchy = "occurred_at"
    search_fields = ("reference",)
    raw_id_fields = ("member",)
    readonly_fields = ("source", "recorded_at")
    ordering = ("-occurred_at", "-pk")

    def get_import_resource_classes(self, request: HttpRequest) -> list[type]:
        # Export keeps ActivityResource, so its form field names stay the same.
        return [ActivityResource]

    def save_model(
        self, request: HttpRequest, obj: Activity, form: Any, change: bool
    ) -> None:
        """Save the activity, then re-evaluate its member in the same request.

        The admin wraps the save in a transaction, so an unexpected
        evaluation error rolls the activity back as well. Without a rule
        version in effect (LadderError) the activity is kept with a warning.
        An edit that moves the activity to another member re-evaluates the
        previous member too.
        """
        super().save_model(request, obj, form, change)

        member_ids = {obj.member_id}
        previous_member_id = form.initial.get("member") if change else None
        if previous_member_id is not None:
            member_ids.add(int(previous_member_id))
        try:
            changes = evaluate(member_ids)[1]
        except LadderError as error:
            logger.warning(
                "activity saved without tier evaluation activity_id=%s "
                "member_ids=%s error=%s",
                obj.pk,
                sorted(member_ids),
                error,
            )
            self.message_user(
                request,
                _("The activity was saved, but tiers were not evaluated: %(error)s")
                % {"error": error},
                messages.WARNING,
            )
            return
        self._report_tier_changes(request, changes)

    def delete_model(self, request: HttpRequest, obj: Activity) -> None:
        """Delete the activity, then re-evaluate its member in the same request.

        The admin's delete view wraps this in a transaction, as it does a
        save, so an unexpected evaluation error keeps the activity.
        """
        member_id = obj.member_id
        activity_id = obj.pk
        super().delete_model(request, obj)
        self._reevaluate_after_delete(request, [activity_id], {member_id})

    def delete_queryset(
        self, request: HttpRequest, queryset: QuerySet[Activity]
    ) -> None:
        """Delete the selected activities, then re-evaluate their members.

        The bulk delete action does not open a transaction, so one is opened
        here to give the deletion and the evaluation the same outcome as a
        single delete. The members are evaluated together, in one call.
        """
        with transaction.atomic():
            rows = list(queryset.order_by().values_list("pk", "member_id"))
            super().delete_queryset(request, queryset)
            activity_ids = [activity_id for activity_id, member_id in rows]
            member_ids = {member_id for activity_id, member_id in rows}
            self._reevaluate_after_delete(request, activity_ids, member_ids)

    def _reevaluate_after_delete(
        self, request: HttpRequest, activity_ids: list[int], member_ids: set[int]
    ) -> None:
        """Re-evaluate the members of deleted activities and report changes.

        Without a rule version in effect (LadderError) the deletion is kept
        and the user is warned.
        """
        if not member_ids:
            return
        try:
            changes = evaluate(member_ids)[1]
        except LadderError as error:
            logger.warning(
                "activities deleted without tier evaluation activity_ids=%s "
                "member_ids=%s error=%s",
                sorted(activity_ids),
                sorted(member_ids),
                error,
            )
            message = ngettext(
                "The activity was deleted, but tiers were not evaluated: %(error)s",
                "The activities were deleted, but tiers were not evaluated: %(error)s",
                len(activity_ids),
            )
            self.message_user(request, message % {"error": error}, messages.WARNING)
            return
        self._report_tier_changes(request, changes)

    def _report_tier_changes(
        self, request: HttpRequest, changes: list[MemberEvaluation]
    ) -> None:
        """Show one message per member whose tier an evaluation changed."""
        names = dict(
            Member.objects.filter(pk__in=[c.member_id for c in changes]).values_list(
                "pk", "name"
            )
        )
        show_names = can_view_personal_data(request.user)
        for evaluation in changes:
            name = names.get(evaluation.member_id, "")
            if show_names and name:
                member = name
            else:
                member = member_label(name, evaluation.member_id)
            message, level = tier_change_message(evaluation, member)
            self.message_user(request, message, level)


@admin.register(Channel)
class ChannelAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "kind")
    list_filter = ("kind",)
    search_fields = ("code", "name")


@admin.register(ActivityKind)
class ActivityKindAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "role")
    list_filter = ("role",)
