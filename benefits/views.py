"""The pool choice form posted from the member page (see members.views)."""

from __future__ import annotations

import logging

from django import forms
from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from benefits.pools import PoolChoiceError, choose_from_pool
from members.links import ExpiredMemberLink, InvalidMemberLink, member_from_token

logger = logging.getLogger(__name__)


class PoolChoiceForm(forms.Form):
    pool = forms.IntegerField(min_value=1)
    benefit = forms.IntegerField(min_value=1)


def _private(response: HttpResponse) -> HttpResponse:
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


@require_POST
@never_cache
def choose_benefit(request: HttpRequest, token: str) -> HttpResponse:
    """Record the member's choice from a pool, then go back to their page.

    The token is the member page's signed token, so only holders of the
    link can choose. CsrfViewMiddleware rejects posts without the page's
    CSRF token. Responds 404 and 410 for invalid and expired links, like
    the page itself.
    """
    try:
        member = member_from_token(token)
    except ExpiredMemberLink as error:
        logger.info("pool choice rejected: link expired: %s", error)
        response = render(
            request,
            "members/link_expired.html",
            {"max_age_days": settings.CRM_MEMBER_LINK_MAX_AGE_DAYS},
            status=410,
        )
        return _private(response)
    except InvalidMemberLink as error:
        logger.info("pool choice rejected: link invalid: %s", error)
        return _private(render(request, "members/link_invalid.html", status=404))

    form = PoolChoiceForm(request.POST)
    if not form.is_valid():
        messages.error(request, _("Pick one of the options, then press Choose."))
    else:
        try:
            grant = choose_from_pool(
                member, form.cleaned_data["pool"], form.cleaned_data["benefit"]
            )
        except PoolChoiceError as error:
            messages.error(request, str(error))
        else:
            messages.success(
                request,
                _("You chose “%(benefit)s”. It is listed under your benefits.")
                % {"benefit": grant.benefit.name},
            )
    page = reverse("members:page", args=[token]) + "#benefits-heading"
    return _private(HttpResponseRedirect(page))
