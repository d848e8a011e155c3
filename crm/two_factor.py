"""Two-factor authentication for staff: the admin login with a TOTP code,
enrolment of TOTP devices, and the rule that importers must verify first.

django-otp stores the devices and marks a session as verified. A staff user
with a confirmed device enters its 6-digit code on the admin login form.
With settings.CRM_REQUIRE_2FA on, a staff user who has members.import or
members.export (directly or through a group) can open no staff page except
the enrolment page until the session is verified with a device.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from typing import Any

import segno
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import AdminSite
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.signals import user_login_failed
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.http import url_has_allowed_host_and_scheme, urlencode
from django.utils.safestring import mark_safe
from django.utils.translation import gettext_lazy as _
from django.views.decorators.http import require_http_methods
from django_otp import DEVICE_ID_SESSION_KEY, devices_for_user, match_token
from django_otp import login as otp_login
from django_otp.plugins.otp_totp.models import TOTPDevice

logger = logging.getLogger(__name__)

# Session key of the TOTP device that the user started to enrol and has
# not confirmed yet.
PENDING_DEVICE_SESSION_KEY = "crm_pending_totp_device"
ENROL_URL_NAME = "admin:two_factor"


def holds_import_or_export(user: Any) -> bool:
    """Return whether the user may import or export members."""
    import_code = settings.IMPORT_EXPORT_IMPORT_PERMISSION_CODE
    export_code = settings.IMPORT_EXPORT_EXPORT_PERMISSION_CODE
    return user.has_perm(f"members.{import_code}") or user.has_perm(
        f"members.{export_code}"
    )


def must_verify_first(user: Any) -> bool:
    """Return whether CRM_REQUIRE_2FA keeps this user on the enrolment page."""
    if not settings.CRM_REQUIRE_2FA:
        return False
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return False
    if user.is_verified():
        return False
    return holds_import_or_export(user)


def has_confirmed_device(user: Any) -> bool:
    return any(True for _device in devices_for_user(user, confirmed=True))


def _normalise_code(raw: str) -> str:
    # Authenticator apps show the code as "123 456", and users paste it that way.
    return "".join(raw.split())


class TwoFactorLoginForm(AdminAuthenticationForm):
    """The admin login form with a code field for staff who have a device.

    A wrong or missing code sends user_login_failed, so django-axes counts
    it like a wrong password.
    """

    otp_token = forms.CharField(
        label=_("Authentication code"),
        required=False,
        max_length=16,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}
        ),
        help_text=_(
            "The 6-digit code from your authenticator app. Leave it empty if "
            "you have not set up two-factor authentication."
        ),
    )

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "invalid_code": _(
            "The authentication code is missing or invalid. Enter the current "
            "6-digit code from your authenticator app."
        ),
    }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        user = self.user_cache
        if user is None or not has_confirmed_device(user):
            return cleaned

        code = _normalise_code(cleaned.get("otp_token") or "")
        device = match_token(user, code) if code else None
        if device is None:
            logger.info("admin login rejected: invalid otp code user_id=%s", user.pk)
            user_login_failed.send(
                sender=__name__,
                credentials={"username": cleaned.get("username")},
                request=self.request,
            )
            raise forms.ValidationError(
                self.error_messages["invalid_code"], code="invalid_code"
            )
        # django-otp's user_logged_in receiver stores this device in the
        # session, which marks the session as verified.
        user.otp_device = device  # type: ignore[attr-defined]
        return cleaned


class CodeForm(forms.Form):
    otp_token = forms.CharField(
        label=_("Authentication code"),
        max_length=16,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric"}
        ),
    )

    def code(self) -> str:
        return _normalise_code(self.cleaned_data["otp_token"])


def _secret_text(device: TOTPDevice) -> str:
    """Return the device key in base32, in groups of four, as apps accept it."""
    secret = base64.b32encode(device.bin_key).decode("ascii")
    return " ".join(secret[index : index + 4] for index in range(0, len(secret), 4))


def _qr_svg(device: TOTPDevice) -> str:
    # The SVG is drawn by segno from the otpauth:// URL alone, so it has no
    # markup from user input.
    return mark_safe(segno.make(device.config_url, error="m").svg_inline(scale=4))  # noqa: S308


def _pending_device(request: HttpRequest) -> TOTPDevice | None:
    device_id = request.session.get(PENDING_DEVICE_SESSION_KEY)
    if device_id is None:
        return None
    return TOTPDevice.objects.filter(
        pk=device_id, user=request.user, confirmed=False
    ).first()


def _page(request: HttpRequest, **context: Any) -> TemplateResponse:
    # OTPMiddleware adds is_verified() to request.user.
    user: Any = request.user
    devices = TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk")
    return TemplateResponse(
        request,
        "admin/two_factor.html",
        {
            **admin.site.each_context(request),
            "title": _("Two-factor authentication"),
            "devices": devices,
            "required": must_verify_first(user),
            "verified": user.is_verified(),
            "pending": _pending_device(request),
            "code_form": CodeForm(),
            **context,
        },
    )


def _start(request: HttpRequest) -> HttpResponse:
    """Create an unconfirmed device and show its QR code and key this once.

    NOTE: a user without a confirmed device enrols with a password session
    alone, so someone who has an importer's password before the importer
    enrols can enrol their own device first.
    """
    TOTPDevice.objects.filter(user=request.user, confirmed=False).delete()
    device = TOTPDevice.objects.create(
        user=request.user, name=str(_("Authenticator app")), confirmed=False
    )
    request.session[PENDING_DEVICE_SESSION_KEY] = device.pk
    logger.info(
        "totp enrolment started user_id=%s device_id=%s", request.user.pk, device.pk
    )
    return _page(
        request,
        pending=device,
        qr_svg=_qr_svg(device),
        secret=_secret_text(device),
    )


def _confirm(request: HttpRequest) -> HttpResponse:
    device = _pending_device(request)
    form = CodeForm(request.POST)
    if device is None:
        messages.error(
            request,
            _("No device is waiting for confirmation. Start the set-up again."),
        )
        return HttpResponseRedirect(reverse(ENROL_URL_NAME))
    # django-otp makes a device wait 1, 2, 4, ... seconds after each wrong
    # code, and rejects even the right code during the wait.
    allowed, _throttle = device.verify_is_allowed()
    if form.is_valid() and not allowed:
        form.add_error(
            None,
            _(
                "Too many wrong codes in a row. Wait a few seconds, then enter "
                "the code that the app shows now."
            ),
        )
        return _page(request, code_form=form)
    if not form.is_valid() or not device.verify_token(form.code()):
        form.add_error(
            None,
            _(
                "The code is invalid. Enter the current code that the app shows "
                "for this account, or start again if you did not scan the QR code."
            ),
        )
        return _page(request, code_form=form)

    device.confirmed = True
    device.save(update_fields=["confirmed"])
    del request.session[PENDING_DEVICE_SESSION_KEY]
    otp_login(request, device)
    logger.info(
        "totp device confirmed user_id=%s device_id=%s", request.user.pk, device.pk
    )
    messages.success(
        request,
        _("Two-factor authentication is on. Enter a code from the app at each login."),
    )
    return HttpResponseRedirect(_next_url(request))


def _remove(request: HttpRequest) -> HttpResponse:
    """Delete a confirmed device after a current code from any of the user's devices."""
    device = TOTPDevice.objects.filter(
        pk=request.POST.get("device"), user=request.user, confirmed=True
    ).first()
    form = CodeForm(request.POST)
    if device is None:
        messages.error(request, _("The device was not found."))
        return HttpResponseRedirect(reverse(ENROL_URL_NAME))
    if not form.is_valid() or match_token(request.user, form.code()) is None:
        form.add_error(
            None,
            _("The code is invalid, so the device was kept. Enter a current code."),
        )
        return _page(request, remove_form=form, remove_device=device)

    removed_id = device.persistent_id
    logger.info(
        "totp device removed user_id=%s device_id=%s", request.user.pk, device.pk
    )
    device.delete()
    if request.session.get(DEVICE_ID_SESSION_KEY) == removed_id:
        # The session was verified with this device, so it is no longer verified.
        del request.session[DEVICE_ID_SESSION_KEY]
    messages.success(request, _("The device was removed."))
    return HttpResponseRedirect(reverse(ENROL_URL_NAME))


def _next_url(request: HttpRequest) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("admin:index")


@require_http_methods(["GET", "POST"])
def two_factor_view(request: HttpRequest) -> HttpResponse:
    """Show the user's devices, and start, confirm or remove a device on POST."""
    if request.method == "GET":
        return _page(request, next=request.GET.get("next", ""))

    action = request.POST.get("action")
    if action == "start":
        return _start(request)
    if action == "confirm":
        return _confirm(request)
    if action == "remove":
        return _remove(request)
    messages.error(request, _("Unknown action."))
    return HttpResponseRedirect(reverse(ENROL_URL_NAME))


class RequireTwoFactorMiddleware:
    """Send importers and exporters without a verified device to enrolment.

    It applies to the admin and to the staff import pages under /staff/,
    and lets the login, logout and enrolment pages through. Other pages
    (the member page, the API) are not staff pages and pass unchanged.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if _is_guarded_path(request.path) and must_verify_first(request.user):
            enrol_url = reverse(ENROL_URL_NAME)
            query = urlencode({"next": request.get_full_path()})
            return HttpResponseRedirect(f"{enrol_url}?{query}")
        return self.get_response(request)


def _is_guarded_path(request_path: str) -> bool:
    admin_root = reverse("admin:index")
    staff_root = reverse("members:large-import")
    if not (request_path.startswith(admin_root) or request_path.startswith(staff_root)):
        return False
    open_paths = (
        reverse(ENROL_URL_NAME),
        reverse("admin:login"),
        reverse("admin:logout"),
        reverse("admin:jsi18n"),
    )
    return request_path not in open_paths


def lockout_response(
    request: HttpRequest,
    original_response: HttpResponse | None = None,
    credentials: dict[str, Any] | None = None,
) -> HttpResponse:
    """Render the page django-axes shows to a locked-out login (AXES_LOCKOUT_CALLABLE)."""
    cool_off = settings.AXES_COOLOFF_TIME
    context = {
        **admin.site.each_context(request),
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "cooloff_minutes": int(cool_off.total_seconds() // 60) if cool_off else None,
    }
    return render(request, "admin/login_locked.html", context, status=429)


def two_factor_urls(site: AdminSite) -> list[URLPattern]:
    return [
        path(
            "two-factor/",
            site.admin_view(two_factor_view),
            name="two_factor",
        ),
    ]


def install(site: AdminSite) -> None:
    """Put the enrolment page and the code field into ``site``'s login."""
    site.login_form = TwoFactorLoginForm
    site.login_template = "admin/login_two_factor.html"
    site_urls = site.get_urls

    def get_urls() -> list[Any]:
        return [*two_factor_urls(site), *site_urls()]

    site.get_urls = get_urls  # type: ignore[method-assign]
