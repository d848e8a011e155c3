"""Work queues in the admin: members near promotion and members at risk.

One ModelAdmin over MemberOutlook serves both queues, and its "queue" filter
picks one, so no proxy model and no migration is needed. The rows are what
tiers.outlook.refresh_outlooks() stored. The three bulk actions (send a
reminder, extend the review, export to Excel) call services in tiers.outlook
and members.importing.formats; nothing here applies a tier rule.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db.models import F, QuerySet
from django.db.models.expressions import OrderBy
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from members.admin_guards import FreeTextLookupGuard
from members.audit import record_event
from members.importing.formats import write_workbook
from members.models import AuditAction
from members.privacy import can_view_personal_data, mask_name
from tiers import outlook as outlooks
from tiers.formatting import format_date, format_metric_value, local_date
from tiers.models import MemberOutlook, Metric, Window

QUEUE_NEAR_PROMOTION = "near_promotion"
QUEUE_AT_RISK = "at_risk"
QUEUES = (QUEUE_NEAR_PROMOTION, QUEUE_AT_RISK)
SHARE_CHOICES = (70, 80, 90)
REVIEW_WITHIN_DAYS = (7, 30, 90)
MEMBER_CHANGE_PERMISSION = "members.change_member"
EXPORT_PERMISSION = "members.export"
XLSX_CONTENT_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
# The rows the extension form lists before it ends with "and N more".
EXTENSION_PREVIEW_ROWS = 20
# Maximum rows a queue list counts (see CappedPaginator).
COUNT_CAP = 10_000


def selected_queue(request: HttpRequest) -> str:
    """Return the queue the request shows: near promotion unless the request
    names the at-risk queue."""
    value = request.GET.get("queue")
    return value if value in QUEUES else QUEUE_NEAR_PROMOTION


class QueueFilter(admin.SimpleListFilter):
    """The queue a list shows. It has no "All" choice, because a list of
    every outlook is neither queue."""

    title = _("work queue")
    parameter_name = "queue"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            (QUEUE_NEAR_PROMOTION, _("Near promotion")),
            (QUEUE_AT_RISK, _("At risk")),
        ]

    def value(self) -> str:
        value = super().value()
        return value if value in QUEUES else QUEUE_NEAR_PROMOTION

    def choices(self, changelist: ChangeList) -> Iterator[Any]:
        for value, label in self.lookup_choices:
            yield {
                "selected": self.value() == value,
                # The share applies to one queue only, and the page number
                # and sort order of one queue mean nothing in the other.
                "query_string": changelist.get_query_string(
                    {self.parameter_name: value}, remove=["share", "p", "o"]
                ),
                "display": label,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == QUEUE_AT_RISK:
            return queryset.filter(at_risk=True)
        # A member at 100 % meets the next tier's rules already and is
        # promoted by the next evaluation, so it is no longer "near".
        return queryset.filter(next_tier__isnull=False, progress__lt=100)


class ShareFilter(admin.SimpleListFilter):
    """The minimum progress to the next tier of a member near promotion.

    Shown in the near promotion queue only. The default comes from the
    setting CRM_NEAR_PROMOTION_PERCENT.
    """

    title = _("progress to the next tier")
    parameter_name = "share"

    def __init__(
        self, request: HttpRequest, params: dict[str, Any], model: Any, model_admin: Any
    ) -> None:
        self.queue = selected_queue(request)
        super().__init__(request, params, model, model_admin)

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        shares = sorted({*SHARE_CHOICES, outlooks.near_promotion_percent()})
        return [
            (str(share), _("at least %(share)d %%") % {"share": share})
            for share in shares
        ]

    def has_output(self) -> bool:
        return self.queue == QUEUE_NEAR_PROMOTION

    def value(self) -> str:
        value = super().value()
        if value is not None and value.isdigit() and 0 <= int(value) <= 100:
            return value
        return str(outlooks.near_promotion_percent())

    def choices(self, changelist: ChangeList) -> Iterator[Any]:
        for value, label in self.lookup_choices:
            yield {
                "selected": self.value() == value,
                "query_string": changelist.get_query_string(
                    {self.parameter_name: value}, remove=["p"]
                ),
                "display": label,
            }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(progress__gte=int(self.value()))


class ReviewWithinFilter(admin.SimpleListFilter):
    """Members whose review, or grace period end, is at most N days away.

    Reviews already passed count as within any N.
    """

    title = _("review within")
    parameter_name = "review_within"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            (str(days), _("%(days)d days") % {"days": days})
            for days in REVIEW_WITHIN_DAYS
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value is None or not value.isdigit():
            return queryset
        latest = timezone.now() + dt.timedelta(days=int(value))
        return queryset.filter(review_at__isnull=False, review_at__lte=latest)


class CappedPaginator(Paginator):
    """A paginator that counts at most COUNT_CAP + 1 rows.

    A queue can hold a sizeable share of a million outlooks, and counting
    them all reads most of the table. Staff work a queue from the top, so
    pages past the cap are not offered.
    """

    @cached_property
    def count(self) -> int:
        # The admin passes the changelist's queryset. Neither its joins nor
        # its order change the count, and without them the count stops after
        # COUNT_CAP + 1 matching rows instead of sorting them all first.
        rows = cast(QuerySet[Any], self.object_list)
        return rows.select_related(None).order_by()[: COUNT_CAP + 1].count()


class ExtendReviewForm(forms.Form):
    days = forms.IntegerField(
        label=_("Days"),
        min_value=outlooks.MIN_EXTENSION_DAYS,
        max_value=outlooks.MAX_EXTENSION_DAYS,
        help_text=_(
            "How many days later the review takes place, from 1 to 365. A review "
            "that has passed moves to this many days from now."
        ),
    )
    reason = forms.CharField(
        label=_("Reason"),
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("Stored with each extension, for the audit trail."),
    )

    def clean_reason(self) -> str:
        reason = str(self.cleaned_data["reason"]).strip()
        if not reason:
            raise forms.ValidationError(_("Enter why the review is extended."))
        return reason


def _explanation_part(item: MemberOutlook, part: str) -> dict[str, Any] | None:
    explanation = item.explanation or {}
    value = explanation.get(part)
    return value if isinstance(value, dict) else None


def _rule(item: MemberOutlook, part: str) -> dict[str, Any] | None:
    found = _explanation_part(item, part)
    return found.get("rule") if found else None


@admin.register(MemberOutlook)
class WorkQueueAdmin(FreeTextLookupGuard, admin.ModelAdmin):
    """The near promotion and at-risk queues, read-only, with bulk actions.

    Near promotion: members whose progress to the next tier is at least the
    chosen share and below 100 %, soonest projected date first. At risk:
    members who would drop at their coming review at the current pace,
    soonest review first. tiers.outlook defines both figures.
    """

    change_list_template = "admin/tiers/queues_change_list.html"
    list_filter = [QueueFilter, ShareFilter, ReviewWithinFilter, "next_tier", "tier"]
    # The tiers are shown on every row; joined here instead of one query per
    # row each. The members are read by get_queryset().
    list_select_related = ["tier", "next_tier"]
    list_display_links = None
    list_per_page = 100
    paginator = CappedPaginator
    # The total would count every outlook, a million rows in a large program,
    # and so would the filter counts.
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = ["send_reminders", "extend_reviews", "export_xlsx"]
    fields = readonly_fields = ("member", "tier", "next_tier", "figures", "computed_at")

    # Permissions: the rows are computed, never edited by hand.

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_member_change_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(MEMBER_CHANGE_PERMISSION)

    def has_export_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(EXPORT_PERMISSION)

    # The list

    def get_queryset(self, request: HttpRequest) -> QuerySet[MemberOutlook]:
        # One query for the members of the page's rows. A join would make
        # PostgreSQL join every row of the queue before sorting it.
        return super().get_queryset(request).prefetch_related("member")

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        if selected_queue(request) == QUEUE_AT_RISK:
            return [
                "member_link",
                "tier",
                "review_at",
                "retention_percent",
                "short_at_review",
                "computed_at",
            ]
        return [
            "member_link",
            "tier",
            "next_tier",
            "progress_percent",
            "projected_on",
            "missing",
            "computed_at",
        ]

    def get_ordering(self, request: HttpRequest) -> list[Any]:
        if selected_queue(request) == QUEUE_AT_RISK:
            return ["review_at", "retention_progress", "member"]
        # Members without a projected date come last: their pace does not
        # reach the next tier.
        soonest: OrderBy = F("projected_on").asc(nulls_last=True)
        return [soonest, "-progress", "member"]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        if selected_queue(request) == QUEUE_AT_RISK:
            title = gettext("At risk")
            help_text = gettext(
                "Members who would drop at their coming review, or at the end "
                "of their grace period, if their activity went on at the pace "
                "of the last %(days)d days. Soonest review first."
            ) % {"days": outlooks.pace_days()}
        else:
            title = gettext("Near promotion")
            help_text = gettext(
                "Members who have reached at least the chosen share of the next "
                "tier's requirements but not all of them. The member whose pace "
                "reaches the next tier soonest comes first."
            )
        context = {"title": title, "queue_help": help_text, **(extra_context or {})}
        return super().changelist_view(request, extra_context=context)

    @admin.display(description=_("member"), ordering="member")
    def member_link(self, item: MemberOutlook) -> SafeString:
        url = reverse("admin:members_member_change", args=[item.member_id])
        return format_html('<a href="{}">{}</a>', url, item.member)

    @admin.display(description=_("progress"), ordering="progress")
    def progress_percent(self, item: MemberOutlook) -> str:
        return f"{item.progress} %"

    @admin.display(description=_("progress to keep the tier"))
    def retention_percent(self, item: MemberOutlook) -> str:
        if item.retention_progress is None:
            return "—"
        return f"{item.retention_progress} %"

    @admin.display(description=_("missing for the next tier"))
    def missing(self, item: MemberOutlook) -> str:
        return outlooks.missing_text(_rule(item, "next"))

    @admin.display(description=_("short at the review, at this pace"))
    def short_at_review(self, item: MemberOutlook) -> str:
        return outlooks.missing_text(_rule(item, "review"))

    # The detail page

    @admin.display(description=_("figures"))
    def figures(self, item: MemberOutlook) -> SafeString:
        """Show each requirement's value, threshold, recent pace and date."""
        parts = []
        upcoming = _explanation_part(item, "next")
        if upcoming and upcoming.get("rule"):
            parts.append(
                format_html(
                    "<h3>{}</h3>{}",
                    gettext("Next tier: %(tier)s, %(percent)d %%")
                    % {"tier": upcoming["name"], "percent": upcoming["percent"]},
                    _requirement_table(item, upcoming["rule"], at_review=False),
                )
            )
        review = _explanation_part(item, "review")
        if review and review.get("rule"):
            parts.append(
                format_html(
                    "<h3>{}</h3>{}",
                    gettext("Review of %(tier)s on %(date)s")
                    % {
                        "tier": review["name"],
                        "date": format_date(dt.datetime.fromisoformat(review["at"])),
                    },
                    _requirement_table(item, review["rule"], at_review=True),
                )
            )
        if not parts:
            return format_html("{}", "—")
        return format_html_join("", "{}", ((part,) for part in parts))

    # Actions

    @admin.action(
        description=_("Send a progress reminder"), permissions=["member_change"]
    )
    def send_reminders(
        self, request: HttpRequest, queryset: QuerySet[MemberOutlook]
    ) -> None:
        member_ids = list(queryset.values_list("member_id", flat=True))

        result = outlooks.send_nudges(member_ids, local_date(timezone.now()))

        if result.sent:
            self.message_user(
                request,
                ngettext(
                    "Queued a reminder to %(count)d member.",
                    "Queued reminders to %(count)d members.",
                    result.sent,
                )
                % {"count": result.sent},
                messages.SUCCESS,
            )
        if result.repeated:
            self.message_user(
                request,
                ngettext(
                    "%(count)d member already had a reminder today; none was sent again.",
                    "%(count)d members already had a reminder today; none was sent again.",
                    result.repeated,
                )
                % {"count": result.repeated},
                messages.WARNING,
            )
        if result.skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d member lacks nothing to remind of and got no reminder.",
                    "%(count)d members lack nothing to remind of and got no reminder.",
                    result.skipped,
                )
                % {"count": result.skipped},
                messages.WARNING,
            )

    @admin.action(
        description=_("Extend the review (grace)"), permissions=["member_change"]
    )
    def extend_reviews(
        self, request: HttpRequest, queryset: QuerySet[MemberOutlook]
    ) -> HttpResponse | None:
        form = ExtendReviewForm(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            member_ids = list(queryset.values_list("member_id", flat=True))

            result = outlooks.extend_reviews(
                member_ids,
                days=form.cleaned_data["days"],
                reason=form.cleaned_data["reason"],
                user=request.user,
            )

            self._report_extension(request, result)
            return None
        count = queryset.count()
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Extend the review"),
            "opts": self.opts,
            "form": form,
            "count": count,
            "preview": list(queryset[:EXTENSION_PREVIEW_ROWS]),
            "more": max(count - EXTENSION_PREVIEW_ROWS, 0),
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "form_url": request.get_full_path(),
        }
        return TemplateResponse(request, "admin/tiers/queues_extend.html", context)

    def _report_extension(
        self, request: HttpRequest, result: outlooks.ExtensionResult
    ) -> None:
        if result.extended:
            self.message_user(
                request,
                ngettext(
                    "Extended the review of %(count)d member.",
                    "Extended the reviews of %(count)d members.",
                    len(result.extended),
                )
                % {"count": len(result.extended)},
                messages.SUCCESS,
            )
        if result.without_review:
            self.message_user(
                request,
                ngettext(
                    "%(count)d member has no review date and was left unchanged.",
                    "%(count)d members have no review date and were left unchanged.",
                    len(result.without_review),
                )
                % {"count": len(result.without_review)},
                messages.WARNING,
            )

    @admin.action(description=_("Export to Excel"), permissions=["export"])
    def export_xlsx(
        self, request: HttpRequest, queryset: QuerySet[MemberOutlook]
    ) -> HttpResponse:
        rows = queryset.select_related("member", "tier", "next_tier")
        masked = not can_view_personal_data(request.user)

        workbook = outlooks_workbook(rows.iterator(chunk_size=2000), masked=masked)
        record_event(
            request.user,
            AuditAction.EXPORT,
            count=queryset.count(),
            detail={"export": "work queue", "queue": selected_queue(request)},
        )

        day = local_date(timezone.now()).isoformat()
        filename = f"work-queue-{selected_queue(request)}-{day}.xlsx"
        return HttpResponse(
            workbook,
            content_type=XLSX_CONTENT_TYPE,
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )


def _window_label(window: str, days: int | None) -> str:
    label = str(Window(window).label)
    return f"{label} ({days})" if days else label


def _requirement_table(
    item: MemberOutlook, rule: dict[str, Any], *, at_review: bool
) -> SafeString:
    """Lay out the requirements of an outlook's rule tree as an HTML table."""
    # The pace window the outlook was computed with, which a later change of
    # the setting does not alter.
    days = (item.explanation or {}).get("pace_days", outlooks.pace_days())
    if at_review:
        headers = [
            gettext("Requirement"),
            gettext("Now"),
            gettext("At the review, at this pace"),
            gettext("Threshold"),
            gettext("Last %(days)s days") % {"days": days},
        ]
    else:
        headers = [
            gettext("Requirement"),
            gettext("Value"),
            gettext("Threshold"),
            gettext("Last %(days)s days") % {"days": days},
            gettext("Reached on, at this pace"),
        ]
    rows = []
    for leaf in _leaves(rule):
        metric = leaf["metric"]
        label = f"{Metric(metric).label}, {_window_label(leaf['window'], leaf['days'])}"
        value = format_metric_value(metric, Decimal(leaf["value"]))
        threshold = format_metric_value(
            metric, Decimal(leaf["threshold"]), round_up=True
        )
        recent = format_metric_value(metric, Decimal(leaf["recent"]))
        if at_review:
            now = format_metric_value(metric, Decimal(leaf["now"]))
            rows.append((label, now, value, threshold, recent))
        else:
            rows.append((label, value, threshold, recent, _reached_text(leaf)))
    head = format_html_join("", "<th>{}</th>", ((header,) for header in headers))
    body = format_html_join(
        "",
        "<tr>" + "<td>{}</td>" * len(headers) + "</tr>",
        rows,
    )
    return format_html("<table><tr>{}</tr>{}</table>", head, body)


def _leaves(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if "items" not in node:
        yield node
        return
    for item in node["items"]:
        yield from _leaves(item)


def _reached_text(leaf: dict[str, Any]) -> str:
    if leaf["on"]:
        return format_date(dt.date.fromisoformat(leaf["on"]))
    texts = {
        outlooks.Status.NO_PACE: gettext("No activity in the pace window"),
        outlooks.Status.SHORT_THIS_YEAR: gettext("Falls short this year"),
        outlooks.Status.BELOW_WINDOW: gettext("The pace cannot fill the window"),
        outlooks.Status.BEYOND_HORIZON: gettext("More than ten years away"),
    }
    return texts.get(leaf["status"], "—")


def outlooks_workbook(items: Iterable[MemberOutlook], *, masked: bool = True) -> bytes:
    """Write outlooks to an XLSX file, one row each, headings in the active language.

    Load the outlooks with select_related("member", "tier", "next_tier").
    Member names are masked unless ``masked`` is false.
    Text that a spreadsheet would run as a formula is stored as text
    (members.importing.formats.write_workbook). Percentages stay numbers.
    """
    headers = [
        gettext("Member ID"),
        gettext("Member"),
        gettext("Tier"),
        gettext("Next tier"),
        gettext("Progress (%)"),
        gettext("Next tier at this pace"),
        gettext("Missing for the next tier"),
        gettext("Review"),
        gettext("At risk"),
        gettext("Progress to keep the tier (%)"),
        gettext("Short at the review, at this pace"),
        gettext("Computed at"),
    ]
    rows = (
        [
            item.member_id,
            mask_name(item.member.name) if masked else item.member.name,
            item.tier.name if item.tier else "",
            item.next_tier.name if item.next_tier else "",
            item.progress,
            item.projected_on,
            outlooks.missing_text(_rule(item, "next")),
            local_date(item.review_at) if item.review_at else None,
            gettext("yes") if item.at_risk else gettext("no"),
            item.retention_progress,
            outlooks.missing_text(_rule(item, "review")),
            timezone.localtime(item.computed_at).strftime("%Y-%m-%d %H:%M"),
        ]
        for item in items
    )
    return write_workbook([(gettext("Work queue"), headers, rows)])
