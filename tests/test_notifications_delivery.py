"""Sending outbox messages: retries, backoff, no double sends, the backends.

The webhook tests post to a real HTTP server on 127.0.0.1 that each test
starts on a free port and scripts with the status codes to respond with.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core import mail
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from members.delivery.webhook import sign
from members.jobs import claim_due_messages, retry_delay, send_due_messages
from members.models import Member, OutboxMessage
from members.notifications import notify
from tests.conftest import make_member

ON_POSTGRESQL = os.environ.get("DATABASE_URL", "").startswith("postgres")
SECRET = "test-webhook-secret"  # noqa: S105 - a fixed key for signing tests
Status = OutboxMessage.Status


@dataclass
class ReceivedRequest:
    # Looked up case-insensitively: urllib sends "X-crm-timestamp".
    headers: Message
    body: bytes


@dataclass
class WebhookServer:
    """A scripted receiver that responds with ``statuses`` in order, then 200."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    delay_seconds: float = 0.0
    received: list[ReceivedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_status(self) -> int:
        with self.lock:
            return self.statuses.pop(0) if self.statuses else 200


@pytest.fixture
def webhook_server() -> Iterator[WebhookServer]:
    server_state = WebhookServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            body = self.rfile.read(length)
            with server_state.lock:
                server_state.received.append(ReceivedRequest(self.headers, body))
            time.sleep(server_state.delay_seconds)
            status = server_state.next_status()
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "http://127.0.0.1:9/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    host, port = server.server_address[:2]
    server_state.url = f"http://{host}:{port}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server_state
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def webhook_settings(settings, webhook_server):
    settings.CRM_NOTIFICATION_BACKENDS = ["webhook"]
    settings.CRM_WEBHOOK_URL = webhook_server.url
    settings.CRM_WEBHOOK_SECRET = SECRET
    settings.CRM_WEBHOOK_TIMEOUT_SECONDS = 5
    settings.CRM_NOTIFICATION_RETRY_SECONDS = 60
    settings.CRM_NOTIFICATION_RETRY_MAX_SECONDS = 3600
    settings.CRM_NOTIFICATION_MAX_ATTEMPTS = 5
    return settings


@pytest.fixture
def carol(store) -> Member:
    member = make_member(store, "C-1", name="Carol Zhou")
    member.phone = "138 0013 8000"
    member.phone_e164 = "+8613800138000"
    member.email = "carol@example.com"
    member.language = "en"
    member.save()
    return member


def promote(member: Member, key: str = "tier-change:1") -> OutboxMessage:
    notify(member.pk, "promotion", {"tier": "Gold", "from_tier": "Silver"}, key)
    return OutboxMessage.objects.get(key=key)


# Webhook: retries and backoff


@pytest.mark.django_db
def test_webhook_retried_until_sent(webhook_settings, webhook_server, carol):
    webhook_server.statuses = [500, 503]
    message = promote(carol)
    start = timezone.now()

    first = send_due_messages(now=start)
    message.refresh_from_db()
    first_retry = message.next_attempt_at
    too_early = send_due_messages(now=first_retry - dt.timedelta(seconds=1))
    second = send_due_messages(now=first_retry)
    message.refresh_from_db()
    second_retry = message.next_attempt_at
    third = send_due_messages(now=second_retry)
    message.refresh_from_db()

    assert first == {"retry": 1}
    assert too_early == {}
    assert second == {"retry": 1}
    assert third == {"sent": 1}
    assert first_retry - start == dt.timedelta(seconds=60)
    assert second_retry - first_retry == dt.timedelta(seconds=120)
    assert message.status == Status.SENT
    assert message.attempts == 3
    assert message.sent_at is not None
    assert message.last_error == ""
    assert len(webhook_server.received) == 3


@pytest.mark.django_db
def test_sent_message_not_sent_again(webhook_settings, webhook_server, carol):
    promote(carol)
    later = timezone.now() + dt.timedelta(days=1)

    send_due_messages()
    again = send_due_messages(now=later)

    assert again == {}
    assert len(webhook_server.received) == 1


@pytest.mark.django_db
def test_webhook_fails_permanently(webhook_settings, webhook_server, carol):
    webhook_settings.CRM_NOTIFICATION_MAX_ATTEMPTS = 3
    webhook_server.statuses = [500] * 10
    message = promote(carol)
    clock = timezone.now()

    outcomes = []
    for _ in range(4):
        outcomes.append(send_due_messages(now=clock))
        clock += dt.timedelta(days=1)
    message.refresh_from_db()

    assert outcomes == [{"retry": 1}, {"retry": 1}, {"failed": 1}, {}]
    assert message.status == Status.FAILED
    assert message.attempts == 3
    assert message.last_error == "The webhook responded with HTTP 500."
    assert len(webhook_server.received) == 3


@pytest.mark.django_db
def test_permanent_failure_shown_to_staff(
    webhook_settings, webhook_server, carol, admin_client
):
    webhook_settings.CRM_NOTIFICATION_MAX_ATTEMPTS = 1
    webhook_server.statuses = [502]
    message = promote(carol)
    send_due_messages()
    url = reverse("admin:members_outboxmessage_changelist")

    page = admin_client.get(url, {"status__exact": "failed"})
    admin_client.post(
        url, {"action": "send_again_action", "_selected_action": [message.pk]}
    )
    resent = send_due_messages()
    message.refresh_from_db()

    assert "The webhook responded with HTTP 502." in page.content.decode()
    assert resent == {"sent": 1}
    assert message.status == Status.SENT
    assert len(webhook_server.received) == 2


@pytest.mark.parametrize(
    ("attempts", "seconds"),
    [(1, 60), (2, 120), (3, 240), (6, 1920), (7, 3600), (50, 3600), (10_000, 3600)],
)
def test_retry_delay_doubles_to_cap(settings, attempts, seconds):
    settings.CRM_NOTIFICATION_RETRY_SECONDS = 60
    settings.CRM_NOTIFICATION_RETRY_MAX_SECONDS = 3600

    assert retry_delay(attempts) == dt.timedelta(seconds=seconds)


@pytest.mark.django_db
def test_redirect_counts_as_failure(webhook_settings, webhook_server, carol):
    webhook_server.statuses = [302]
    message = promote(carol)

    outcome = send_due_messages()
    message.refresh_from_db()

    assert outcome == {"retry": 1}
    assert message.last_error == "The webhook responded with HTTP 302."
    assert len(webhook_server.received) == 1


@pytest.mark.django_db
def test_webhook_timeout_counts_as_failure(webhook_settings, webhook_server, carol):
    webhook_settings.CRM_WEBHOOK_TIMEOUT_SECONDS = 1
    webhook_server.delay_seconds = 2
    message = promote(carol)

    outcome = send_due_messages()
    message.refresh_from_db()

    assert outcome == {"retry": 1}
    assert message.last_error == "The webhook request timed out after 1 seconds."


@pytest.mark.django_db
def test_refused_connection_counts_as_failure(webhook_settings, carol):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    webhook_settings.CRM_WEBHOOK_URL = f"http://127.0.0.1:{port}/hook"
    message = promote(carol)

    outcome = send_due_messages()
    message.refresh_from_db()

    assert outcome == {"retry": 1}
    assert message.last_error.startswith("The webhook request failed:")


@pytest.mark.django_db
def test_logs_carry_no_personal_data(webhook_settings, webhook_server, carol, caplog):
    webhook_server.statuses = [500]
    message = promote(carol)

    with caplog.at_level("INFO"):
        send_due_messages()
        send_due_messages(now=timezone.now() + dt.timedelta(hours=1))

    logged = caplog.text
    assert f"outbox message {message.pk} for member {carol.pk}" in logged
    for personal in ("Carol", "+8613800138000", "138 0013", "carol@example.com"):
        assert personal not in logged
    assert "You are now Gold" not in logged


# Webhook: the request


@pytest.mark.django_db
def test_webhook_signature_verifies(webhook_settings, webhook_server, carol):
    message = promote(carol)
    before = int(time.time())

    send_due_messages()

    (request,) = webhook_server.received
    timestamp = request.headers["X-CRM-Timestamp"]
    expected = hmac.new(
        SECRET.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256
    ).hexdigest()
    assert request.headers["X-CRM-Signature"] == f"sha256={expected}"
    assert sign(SECRET, timestamp, request.body) == f"sha256={expected}"
    assert sign("another secret", timestamp, request.body) != f"sha256={expected}"
    assert before <= int(timestamp) <= int(time.time())
    assert request.headers["Idempotency-Key"] == message.key
    assert request.headers["Content-Type"] == "application/json"


@pytest.mark.django_db
def test_webhook_payload(webhook_settings, webhook_server, carol):
    promote(carol)

    send_due_messages()

    payload = json.loads(webhook_server.received[0].body)
    assert payload["key"] == "tier-change:1"
    assert payload["topic"] == "promotion"
    assert payload["member_id"] == carol.pk
    assert payload["phone_e164"] == "+8613800138000"
    assert payload["language"] == "en"
    assert payload["subject"] == "You are now Gold"
    assert (
        payload["body"] == "Congratulations! Your tier has gone up from Silver to Gold."
    )
    assert payload["params"] == {"tier": "Gold", "from_tier": "Silver"}


@pytest.mark.django_db
def test_webhook_without_url_fails(webhook_settings, carol):
    webhook_settings.CRM_WEBHOOK_URL = "file:///etc/passwd"
    message = promote(carol)

    send_due_messages()
    message.refresh_from_db()

    assert message.status == Status.PENDING
    assert message.last_error.startswith("CRM_WEBHOOK_URL is not an http or https URL")


# Claims


@pytest.mark.django_db
def test_abandoned_claim_sent_again(webhook_settings, webhook_server, carol):
    webhook_settings.CRM_NOTIFICATION_CLAIM_TIMEOUT_SECONDS = 900
    message = promote(carol)
    now = timezone.now()
    OutboxMessage.objects.filter(pk=message.pk).update(
        status=Status.SENDING,
        claim_token="crashed-run",
        claimed_at=now - dt.timedelta(seconds=901),
        attempts=1,
    )

    outcome = send_due_messages(now=now)
    message.refresh_from_db()

    assert outcome == {"sent": 1}
    assert message.attempts == 2
    assert message.status == Status.SENT


@pytest.mark.django_db
def test_fresh_claim_left_alone(webhook_settings, webhook_server, carol):
    webhook_settings.CRM_NOTIFICATION_CLAIM_TIMEOUT_SECONDS = 900
    message = promote(carol)
    now = timezone.now()
    OutboxMessage.objects.filter(pk=message.pk).update(
        status=Status.SENDING, claim_token="running", claimed_at=now
    )

    outcome = send_due_messages(now=now + dt.timedelta(seconds=899))

    assert outcome == {}
    assert webhook_server.received == []


@pytest.mark.django_db
def test_claim_takes_batch_in_due_order(webhook_settings, store):
    members = [make_member(store, f"M-{n}") for n in range(5)]
    for number, member in enumerate(members):
        promote(member, key=f"tier-change:{number}")

    claimed = claim_due_messages(timezone.now(), limit=3)
    rest = claim_due_messages(timezone.now(), limit=3)

    assert [m.key for m in claimed] == [
        "tier-change:0",
        "tier-change:1",
        "tier-change:2",
    ]
    assert [m.key for m in rest] == ["tier-change:3", "tier-change:4"]
    assert all(m.status == Status.SENDING for m in claimed + rest)
    assert len({m.claim_token for m in claimed}) == 1
    assert claimed[0].claim_token != rest[0].claim_token


@pytest.mark.skipif(not ON_POSTGRESQL, reason="needs concurrent PostgreSQL sessions")
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_concurrent_senders_send_each_once(webhook_settings, webhook_server, store):
    webhook_settings.CRM_NOTIFICATION_BATCH_SIZE = 3
    webhook_server.delay_seconds = 0.01
    members = [make_member(store, f"P-{n}") for n in range(40)]
    for number, member in enumerate(members):
        promote(member, key=f"tier-change:{number}")
    barrier = threading.Barrier(4)
    results: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def run_sender() -> None:
        try:
            barrier.wait()
            results.append(send_due_messages())
        except BaseException as error:  # reported by the assertions below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run_sender) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    keys = Counter(r.headers["Idempotency-Key"] for r in webhook_server.received)
    assert errors == []
    assert len(keys) == 40
    assert set(keys.values()) == {1}
    assert sum(result.get("sent", 0) for result in results) == 40
    assert OutboxMessage.objects.filter(status=Status.SENT).count() == 40
    # More than one run did some of the work, so the runs really overlapped.
    assert sum(1 for result in results if result) >= 2


# E-mail


@pytest.mark.django_db
def test_email_sent_once(settings, carol):
    settings.CRM_NOTIFICATION_BACKENDS = ["email"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    message = promote(carol)

    first = send_due_messages()
    second = send_due_messages(now=timezone.now() + dt.timedelta(days=1))
    message.refresh_from_db()

    assert first == {"sent": 1}
    assert second == {}
    assert message.status == Status.SENT
    (email,) = mail.outbox
    assert email.to == ["carol@example.com"]
    assert email.subject == "You are now Gold"
    assert email.body == "Congratulations! Your tier has gone up from Silver to Gold."


@pytest.mark.django_db
def test_email_in_member_language(settings, store):
    settings.CRM_NOTIFICATION_BACKENDS = ["email"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    member = make_member(store, "Z-1")
    member.email = "zhang@example.com"
    member.language = "zh-hans"
    member.save()
    params = {"benefit": "Coupon", "expires_at": "2025-01-31T12:00:00+08:00"}
    notify(member.pk, "benefit_expiring", params, "grant-expiring:1")

    send_due_messages()

    (email,) = mail.outbox
    assert "2025年1月31日" in email.body


@pytest.mark.django_db
def test_email_skipped_without_address(settings, store):
    settings.CRM_NOTIFICATION_BACKENDS = ["email"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    member = make_member(store, "N-1")
    message = promote(member)

    outcome = send_due_messages()
    message.refresh_from_db()

    assert outcome == {"skipped": 1}
    assert message.status == Status.SKIPPED
    assert message.last_error == "The member has no e-mail address."
    assert mail.outbox == []


@pytest.mark.django_db
def test_email_server_down_is_retried(settings, carol, caplog):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    settings.CRM_NOTIFICATION_BACKENDS = ["email"]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = port
    settings.EMAIL_TIMEOUT = 2
    message = promote(carol)

    with caplog.at_level("INFO"):
        outcome = send_due_messages()
    message.refresh_from_db()

    assert outcome == {"retry": 1}
    assert message.last_error == "Sending the e-mail failed: ConnectionRefusedError."
    assert "carol@example.com" not in caplog.text


# In-app


@pytest.mark.django_db
def test_in_app_needs_no_sender(settings, carol):
    settings.CRM_NOTIFICATION_BACKENDS = ["in_app"]
    message = promote(carol)

    outcome = send_due_messages()

    assert message.status == Status.SENT
    assert outcome == {}


@pytest.mark.django_db
def test_removed_backend_is_failure(settings, carol):
    settings.CRM_NOTIFICATION_BACKENDS = ["email"]
    message = promote(carol)
    settings.CRM_NOTIFICATION_BACKENDS = ["in_app"]

    send_due_messages()
    message.refresh_from_db()

    assert message.status == Status.PENDING
    assert message.last_error.startswith("No backend named 'email'")
