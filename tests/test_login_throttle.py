"""Admin login throttling with django-axes: the lockout after failed logins."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.contrib.auth.models import User
from django.urls import reverse

pytestmark = pytest.mark.django_db

PASSWORD = "right-pw-12345"


@pytest.fixture
def staff(db) -> User:
    return User.objects.create_user(
        "clerk", password=PASSWORD, is_staff=True, is_superuser=True
    )


@pytest.fixture(autouse=True)
def _axes_on(settings) -> None:
    settings.AXES_ENABLED = True
    settings.AXES_FAILURE_LIMIT = 5


def log_in(client, password: str, ip: str = "127.0.0.1", language: str = "en"):
    return client.post(
        reverse("admin:login"),
        {"username": "clerk", "password": password, "next": reverse("admin:index")},
        REMOTE_ADDR=ip,
        HTTP_ACCEPT_LANGUAGE=language,
    )


def fail_five_times(client, ip: str = "127.0.0.1") -> None:
    for attempt in range(5):
        response = log_in(client, f"wrong-{attempt}", ip)
        assert response.status_code in (200, 429), response.status_code


def test_right_password_logs_in(client, staff):
    response = log_in(client, PASSWORD)

    assert response.status_code == 302
    assert response["Location"] == reverse("admin:index")


def test_four_failures_do_not_lock(client, staff):
    for attempt in range(4):
        log_in(client, f"wrong-{attempt}")

    response = log_in(client, PASSWORD)

    assert response.status_code == 302


def test_sixth_attempt_locked_despite_password(client, staff):
    fail_five_times(client)

    response = log_in(client, PASSWORD)

    assert response.status_code == 429
    assert "_auth_user_id" not in client.session


def test_lockout_page_explains_in_english(client, staff):
    fail_five_times(client)

    page = log_in(client, PASSWORD).content.decode()

    assert "Login locked" in page
    assert "after 5 failed logins" in page
    assert "Try again in 15 minutes" in page
    assert "even the right password is rejected" in page


def test_lockout_page_renders_in_chinese(client, staff):
    fail_five_times(client)

    response = log_in(client, PASSWORD, language="zh-hans")

    assert response.status_code == 429
    assert '<html lang="zh-hans"' in response.content.decode()


def test_lockout_is_per_username_and_ip(client, staff):
    fail_five_times(client, ip="127.0.0.1")

    response = log_in(client, PASSWORD, ip="127.0.0.2")

    assert response.status_code == 302


def test_failed_attempts_are_stored(client, staff):
    fail_five_times(client)

    attempt = AccessAttempt.objects.get(username="clerk")

    assert attempt.ip_address == "127.0.0.1"
    assert attempt.failures_since_start == 5


def test_success_resets_the_count(client, staff):
    for attempt in range(4):
        log_in(client, f"wrong-{attempt}")
    log_in(client, PASSWORD)
    client.logout()

    for attempt in range(4):
        log_in(client, f"again-{attempt}")
    response = log_in(client, PASSWORD)

    assert response.status_code == 302


def test_disabled_axes_never_locks(client, staff, settings):
    settings.AXES_ENABLED = False
    fail_five_times(client)

    response = log_in(client, PASSWORD)

    assert response.status_code == 302
