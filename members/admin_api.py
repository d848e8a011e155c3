"""Admin for channel API tokens: who has one, when it was used, and revoking it.

Tokens are made by the create_channel_token command, which prints the token
once, so the admin offers no add form: a form would have to show the
secret on a page or keep it in a message cookie.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from members.api_auth import revoke_tokens
from members.models import ChannelToken


@admin.register(ChannelToken)
class ChannelTokenAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "channel",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = ("channel", ("revoked_at", admin.EmptyFieldListFilter))
    search_fields = ("name", "prefix", "channel__code")
    # The channel column would otherwise cost one query per row.
    list_select_related = ("channel",)
    fields = ("name", "channel", "prefix", "created_at", "last_used_at", "revoked_at")
    readonly_fields = ("channel", "prefix", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Revoking keeps the row, so the prefix in old logs still finds it.
        return False

    @admin.action(
        description=_("Revoke the selected tokens"),
        permissions=["change"],
    )
    def revoke(self, request: HttpRequest, queryset: QuerySet[ChannelToken]) -> None:
        count = revoke_tokens(queryset)
        self.message_user(
            request,
            ngettext(
                "Revoked %(count)d token. Requests with it are now rejected.",
                "Revoked %(count)d tokens. Requests with them are now rejected.",
                count,
            )
            % {"count": count},
            messages.SUCCESS,
        )
