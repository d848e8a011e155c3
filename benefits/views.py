"""The pool choice form posted from the member page (see members.views)."""

from __future__ import annotations

import logging

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from benefits.pools import PoolChoiceError, choose_from_pool
from members.links import MemberLinkError, member_from_token
from members.views import keep_private, link_error_response

logger = logging.getLogger(__name__)


class PoolChoiceForm(forms.Form):
    pool = forms.IntegerField(min_value=1)
    benefit = forms.IntegerField(min_value=1)


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
    except MemberLinkError as error:
        logger.info("pool choice rejected: %s", error)
        return link_error_response(request, error)

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
    return keep_private(HttpResponseRedirect(page))
