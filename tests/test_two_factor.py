"""Two-factor authentication: TOTP at the admin login, enrolment, and the
rule that importers and exporters must verify before using the admin.

Codes are computed from the device key with django_otp.oath.totp, as an
authenticator app would.
"""

from __future__ import annotations

import base64
import re

import pytest
from django.contrib.auth.models import Group, User
from django.urls import reverse
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import totp
from django_otp.plugins.otp_totp.models import TOTPDevice

from members.roles import MANAGER, OPERATOR, RULE_EDITOR

pytestmark = pytest.mark.django_db

PASSWORD = "right-pw-12345"


def code_for(device: TOTPDevice, drift: int = 0) -> str:
    device.refresh_from_db()
    value = totp(device.bin_key, device.step, device.t0, device.digits, drift=drift)
    return f"{value:06d}"


def make_staff(username: str, role: str | None = None) -> User:
    user = User.objects.create_user(username, password=PASSWORD, is_staff=True)
    if role is not None:
        user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def clerk(db) -> User:
    return make_staff("clerk", OPERATOR)


@pytest.fixture
def device(clerk) -> TOTPDevice:
    return TOTPDevice.objects.create(user=clerk, name="phone", confirmed=True)


@pytest.fixture(autouse=True)
def _no_code_throttle(settings) -> None:
    # django-otp delays the next check after a wrong code, so tests that
    # send a wrong code and then a right one would otherwise wait for it.
    settings.OTP_TOTP_THROTTLE_FACTOR = 0


def log_in(client, password: str = PASSWORD, code: str = "", username: str = "clerk"):
    return client.post(
        reverse("admin:login"),
        {
            "username": username,
            "password": password,
            "otp_token": code,
            "next": reverse("admin:index"),
        },
        HTTP_ACCEPT_LANGUAGE="en",
    )


def session_verified(client) -> bool:
    return DEVICE_ID_SESSION_KEY in client.session


# Login


def test_login_form_shows_code_field(client):
    page = client.get(reverse("admin:login")).content.decode()

    assert 'name="otp_token"' in page


def test_staff_without_device_logs_in_with_password(client, clerk):
    response = log_in(client)

    assert response.status_code == 302
    assert not session_verified(client)


def test_device_owner_needs_code(client, device):
    response = log_in(client)

    assert response.status_code == 200
    assert "authentication code is missing or invalid" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_wrong_code_rejected(client, device):
    wrong = f"{(int(code_for(device)) + 1) % 1_000_000:06d}"

    response = log_in(client, code=wrong)

    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_right_code_logs_in_verified(client, device):
    response = log_in(client, code=code_for(device))

    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(device.user_id)
    assert session_verified(client)


def test_code_with_space_accepted(client, device):
    code = code_for(device)

    response = log_in(client, code=f"{code[:3]} {code[3:]}")

    assert response.status_code == 302


def test_code_used_once(client, device):
    code = code_for(device)
    log_in(client, code=code)
    client.logout()

    response = log_in(client, code=code)

    assert response.status_code == 200


def test_code_without_password_rejected(client, device):
    response = log_in(client, password="wrong-pw", code=code_for(device))

    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


def test_wrong_codes_count_toward_lockout(client, device, settings):
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 5
    for attempt in range(5):
        log_in(client, code=f"00000{attempt}")

    response = log_in(client, code=code_for(device))

    assert response.status_code == 429


# Enrolment


def enrol_url() -> str:
    return reverse("admin:two_factor")


def start_enrolment(client) -> tuple[TOTPDevice, str]:
    page = client.post(enrol_url(), {"action": "start"}).content.decode()
    device = TOTPDevice.objects.get(confirmed=False)
    return device, page


def test_enrolment_page_lists_no_device(client, clerk):
    client.force_login(clerk)

    response = client.get(enrol_url(), HTTP_ACCEPT_LANGUAGE="en")

    assert response.status_code == 200
    assert "No device is set up" in response.content.decode()


def test_enrolment_shows_qr_and_secret(client, clerk):
    client.force_login(clerk)

    device, page = start_enrolment(client)

    secret = base64.b32encode(device.bin_key).decode()
    shown = re.search(r'<code id="totp-secret">([A-Z2-7 ]+)</code>', page)
    assert shown is not None
    assert shown.group(1).replace(" ", "") == secret
    assert "<svg" in page
    assert device.confirmed is False


def test_secret_not_shown_again(client, clerk):
    client.force_login(clerk)
    device, _page = start_enrolment(client)
    secret = base64.b32encode(device.bin_key).decode()

    page = client.get(enrol_url()).content.decode()

    assert secret[:8] not in page.replace(" ", "")
    assert 'name="otp_token"' in page


def test_unconfirmed_device_does_not_count_at_login(client, clerk):
    client.force_login(clerk)
    start_enrolment(client)
    client.logout()

    response = log_in(client)

    assert response.status_code == 302


def test_wrong_confirm_code_keeps_unconfirmed(client, clerk):
    client.force_login(clerk)
    device, _page = start_enrolment(client)

    response = client.post(
        enrol_url(),
        {"action": "confirm", "otp_token": "000000"},
        HTTP_ACCEPT_LANGUAGE="en",
    )

    device.refresh_from_db()
    assert response.status_code == 200
    assert "The code is invalid" in response.content.decode()
    assert device.confirmed is False


def test_right_code_right_after_wrong_says_wait(client, clerk, settings):
    # django-otp's default: wait 1 s after the first wrong code, 2 s after
    # the second, and so on.
    settings.OTP_TOTP_THROTTLE_FACTOR = 1
    client.force_login(clerk)
    device, _page = start_enrolment(client)
    client.post(enrol_url(), {"action": "confirm", "otp_token": "000000"})

    response = client.post(
        enrol_url(),
        {"action": "confirm", "otp_token": code_for(device)},
        HTTP_ACCEPT_LANGUAGE="en",
    )

    device.refresh_from_db()
    assert response.status_code == 200
    assert "Too many wrong codes in a row" in response.content.decode()
    assert device.confirmed is False


def test_confirm_with_right_code_verifies_session(client, clerk):
    client.force_login(clerk)
    device, _page = start_enrolment(client)

    response = client.post(
        enrol_url(), {"action": "confirm", "otp_token": code_for(device)}
    )

    device.refresh_from_db()
    assert response.status_code == 302
    assert device.confirmed is True
    assert session_verified(client)


def test_enrolled_device_required_at_next_login(client, clerk):
    client.force_login(clerk)
    device, _page = start_enrolment(client)
    client.post(enrol_url(), {"action": "confirm", "otp_token": code_for(device)})
    client.logout()

    without_code = log_in(client)
    with_code = log_in(client, code=code_for(device, drift=1))

    assert without_code.status_code == 200
    assert with_code.status_code == 302


def test_remove_device_needs_current_code(client, device):
    client.force_login(device.user)

    client.post(
        enrol_url(), {"action": "remove", "device": device.pk, "otp_token": "000000"}
    )

    assert TOTPDevice.objects.filter(pk=device.pk).exists()


def test_remove_device_with_code(client, device):
    client.force_login(device.user)

    response = client.post(
        enrol_url(),
        {"action": "remove", "device": device.pk, "otp_token": code_for(device)},
    )

    assert response.status_code == 302
    assert not TOTPDevice.objects.filter(pk=device.pk).exists()


def test_cannot_remove_another_users_device(client, device):
    other = make_staff("other")
    client.force_login(other)

    client.post(
        enrol_url(),
        {"action": "remove", "device": device.pk, "otp_token": code_for(device)},
    )

    assert TOTPDevice.objects.filter(pk=device.pk).exists()


# CRM_REQUIRE_2FA


@pytest.fixture
def required(settings) -> None:
    settings.CRM_REQUIRE_2FA = True


@pytest.mark.parametrize(
    "url_name",
    ["admin:index", "admin:members_member_changelist", "members:large-import"],
)
def test_importer_sent_to_enrolment(client, clerk, required, url_name):
    client.force_login(clerk)

    response = client.get(reverse(url_name))

    assert response.status_code == 302
    assert response["Location"].startswith(enrol_url())


def test_importer_may_open_enrolment_page(client, clerk, required):
    client.force_login(clerk)

    response = client.get(enrol_url(), HTTP_ACCEPT_LANGUAGE="en")

    assert response.status_code == 200
    assert "must use two-factor authentication" in response.content.decode()


def test_unverified_exporter_sent_to_enrolment(client, required):
    manager = make_staff("boss", MANAGER)
    TOTPDevice.objects.create(user=manager, name="phone", confirmed=True)
    client.force_login(manager)

    response = client.get(reverse("admin:index"))

    assert response.status_code == 302


def test_importer_after_enrolment_opens_admin(client, clerk, required):
    client.force_login(clerk)
    device, _page = start_enrolment(client)
    client.post(enrol_url(), {"action": "confirm", "otp_token": code_for(device)})

    response = client.get(reverse("admin:members_member_changelist"))

    assert response.status_code == 200


def test_importer_verified_at_login_opens_admin(client, device, required):
    log_in(client, code=code_for(device))

    response = client.get(reverse("admin:index"))

    assert response.status_code == 200


def test_rule_editor_not_required(client, required):
    editor = make_staff("editor", RULE_EDITOR)
    client.force_login(editor)

    response = client.get(reverse("admin:index"))

    assert response.status_code == 200


def test_requirement_off_lets_importer_in(client, clerk, settings):
    settings.CRM_REQUIRE_2FA = False
    client.force_login(clerk)

    response = client.get(reverse("admin:index"))

    assert response.status_code == 200


def test_member_page_not_guarded(client, clerk, required):
    client.force_login(clerk)

    response = client.get("/m/not-a-token/")

    assert response.status_code != 302


# In the browser


def code_from_secret(secret_text: str, drift: int = 0) -> str:
    key = base64.b32decode(secret_text.replace(" ", ""))
    return f"{totp(key, drift=drift):06d}"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_enrol_and_log_in_in_browser(live_server, chromium, settings):
    from playwright.sync_api import expect

    settings.CRM_REQUIRE_2FA = True
    make_staff("clerk", OPERATOR)
    page = chromium.new_context(locale="en-US").new_page()

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("clerk")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"/admin/two-factor/\?next="))

    page.get_by_role("button", name="Set up an authenticator app").click()
    expect(page.locator(".two-factor-qr svg")).to_be_visible()
    secret = page.locator("#totp-secret").inner_text()
    page.get_by_label("Authentication code").fill(code_from_secret(secret))
    page.get_by_role("button", name="Confirm", exact=True).click()
    expect(page).to_have_url(f"{live_server.url}/admin/")

    page.get_by_role("button", name="Log out").click()
    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("clerk")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".errornote")).to_contain_text("authentication code is missing")

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Authentication code").fill(code_from_secret(secret, drift=1))
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{live_server.url}/admin/")


def test_admin_pages_link_enrolment(client, clerk):
    client.force_login(clerk)

    page = client.get(reverse("admin:index")).content.decode()

    assert f'href="{enrol_url()}"' in page
