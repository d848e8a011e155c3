"""The member admin's "Find a member by phone or e-mail" page.

The changelist search puts its term in the URL (``?q=``), where it lands in
server logs and browser history, so phones and e-mails are looked up here
instead, in a POST body. The page needs members.view_member. Each lookup
adds a LOOKUP row to the audit log, and the result is a redirect to the
member's change page, or to the member list filtered by id: no URL ever
carries the phone or e-mail.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from django import forms
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.db.models.functions import Lower
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.translation import gettext_lazy as _

from members.audit import record_event
from members.identity import EMAIL, PHONE, email_key
from members.importing.cleaning import phone_e164
from members.models import AuditAction, Member
from members.privacy import can_view_personal_data

logger = logging.getLogger(__name__)


def within_lookup_limit(request: HttpRequest) -> bool:
    """Count one look-up by a masked user and return whether it is allowed.

    Without a limit, staff who see phones masked could try every number of a
    masked phone's hidden digits. Staff with the personal data permission
    are not counted, because they see the phones anyway. The count lives in
    the cache for the current clock hour.
    """
    limit = settings.CRM_LOOKUP_LIMIT_PER_HOUR
    if limit <= 0 or can_view_personal_data(request.user):
        return True
    key = f"members:lookup-count:{request.user.pk}:{int(time.time() // 3600)}"
    cache.add(key, 0, 3600)
    try:
        count = cache.incr(key)
    except ValueError:
        # The entry expired between add() and incr().
        cache.set(key, 1, 3600)
        count = 1
    if count > limit:
        logger.warning(
            "member look-up rejected, hourly limit reached user_id=%s count=%d limit=%d",
            request.user.pk,
            count,
            limit,
        )
        return False
    return True


# The maximum number of members one lookup lists. Further matches are left out.
MAX_LOOKUP_MATCHES = 100


class MemberLookupForm(forms.Form):
    contact = forms.CharField(
        label=_("Phone or e-mail"),
        max_length=254,
        help_text=_(
            "A phone with or without the country code, such as 138 1234 5678 "
            "or +86 138 1234 5678, or an e-mail address."
        ),
    )

    def clean_contact(self) -> str:
        text: str = self.cleaned_data["contact"].strip()
        if "@" not in text and not any(char.isdigit() for char in text):
            raise forms.ValidationError(
                _("Enter a phone number or an e-mail address."),
                code="invalid",
            )
        return text


def find_members(contact: str) -> tuple[str, list[int]]:
    """Return how ``contact`` was read (PHONE or EMAIL) and the matching member ids.

    An e-mail address matches without regard to case. A phone matches the
    normalised phone (E.164) when it is a valid number, and otherwise the
    phone exactly as stored. Merged members are included, because their
    change page links the member they were merged into.
    """
    members = Member.objects.annotate(email_key=Lower("email"))
    if "@" in contact:
        kind = EMAIL
        members = members.filter(email_key=email_key(contact))
    else:
        kind = PHONE
        normalised = phone_e164(contact)
        condition = Q(phone_e164=normalised) if normalised else Q(phone=contact)
        members = members.filter(condition)
    ids = members.order_by("pk").values_list("pk", flat=True)
    return kind, list(ids[:MAX_LOOKUP_MATCHES])


class MemberLookupMixin:
    """Adds the lookup page to a member ModelAdmin at ``lookup/``."""

    admin_site: Any
    opts: Any

    if TYPE_CHECKING:
        # Provided by ModelAdmin, which follows this class in the bases.
        def has_view_permission(
            self, request: HttpRequest, obj: Any = None
        ) -> bool: ...

    def lookup_urls(self) -> list[URLPattern]:
        return [
            path(
                "lookup/",
                self.admin_site.admin_view(self.lookup_view),
                name="members_member_lookup",
            )
        ]

    def lookup_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = MemberLookupForm(request.POST if request.method == "POST" else None)
        not_found = False
        if request.method == "POST" and not within_lookup_limit(request):
            form.add_error(
                None,
                _(
                    "You have reached the limit of %(limit)s look-ups an hour for "
                    "staff who see phones and e-mails masked. Try again later."
                )
                % {"limit": settings.CRM_LOOKUP_LIMIT_PER_HOUR},
            )
            context = {
                **self.admin_site.each_context(request),
                "opts": self.opts,
                "title": _("Find a member by phone or e-mail"),
                "form": form,
                "not_found": False,
            }
            return TemplateResponse(
                request, "admin/members/member_lookup.html", context, status=429
            )
        if request.method == "POST" and form.is_valid():
            kind, member_ids = find_members(form.cleaned_data["contact"])
            record_event(
                request.user,
                AuditAction.LOOKUP,
                member_ids[0] if len(member_ids) == 1 else None,
                count=len(member_ids),
                detail={"by": kind, "matches": len(member_ids)},
            )
            if len(member_ids) == 1:
                url = reverse("admin:members_member_change", args=[member_ids[0]])
                return HttpResponseRedirect(url)
            if member_ids:
                ids = ",".join(str(member_id) for member_id in member_ids)
                url = reverse("admin:members_member_changelist")
                return HttpResponseRedirect(f"{url}?id__in={ids}")
            not_found = True
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": _("Find a member by phone or e-mail"),
            "form": form,
            "not_found": not_found,
        }
        return TemplateResponse(request, "admin/members/member_lookup.html", context)
