"""Admin for the notification outbox: delivery state, filters and resending.

Messages are read-only here, and staff can only send failed or skipped
ones again. Deleting one is not offered, because the next run of
queue_tier_change_messages would create and send it once more.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from members.admin_guards import FreeTextLookupGuard
from members.delivery import configured_backends
from members.models import OutboxMessage
from members.notifications import send_again


class ChannelFilter(admin.SimpleListFilter):
    """Filter by channel, offering the configured backends.

    The default filter for a field without choices would list the distinct
    values with a query over the whole table.
    """

    title = _("channel")
    parameter_name = "channel"

    def lookups(
        self, request: HttpRequest, model_admin: admin.ModelAdmin[OutboxMessage]
    ) -> list[tuple[str, str]]:
        return [(name, name) for name in configured_backends()]

    def queryset(
        self, request: HttpRequest, queryset: QuerySet[OutboxMessage]
    ) -> QuerySet[OutboxMessage]:
        if self.value():
            return queryset.filter(channel=self.value())
        return queryset


@admin.register(OutboxMessage)
class OutboxMessageAdmin(FreeTextLookupGuard, admin.ModelAdmin):
    list_display = (
        "created_at",
        "member",
        "topic",
        "channel",
        "status",
        "attempts",
        "next_attempt_at",
        "sent_at",
        "last_error",
    )
    # The member column would otherwise cost one query per row.
    list_select_related = ("member",)
    list_filter = ("status", ChannelFilter, "topic")
    # Member ids only: the search term travels in the URL (?q=).
    search_fields = ("key", "member__id__exact")
    actions = ["send_again_action"]
    show_full_result_count = False

    def get_readonly_fields(
        self, request: HttpRequest, obj: OutboxMessage | None = None
    ) -> list[str]:
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(
        self, request: HttpRequest, obj: OutboxMessage | None = None
    ) -> bool:
        return False

    @admin.action(description=_("Send again"), permissions=["change"])
    def send_again_action(
        self, request: HttpRequest, queryset: QuerySet[OutboxMessage]
    ) -> None:
        requeued = send_again(queryset)
        skipped = queryset.count() - requeued
        self.message_user(
            request,
            ngettext(
                "%(count)d message will be sent again.",
                "%(count)d messages will be sent again.",
                requeued,
            )
            % {"count": requeued},
            messages.SUCCESS,
        )
        if skipped:
            self.message_user(
                request,
                ngettext(
                    "%(count)d message was left as it is: only failed or skipped "
                    "messages are sent again.",
                    "%(count)d messages were left as they are: only failed or "
                    "skipped messages are sent again.",
                    skipped,
                )
                % {"count": skipped},
                messages.WARNING,
            )
