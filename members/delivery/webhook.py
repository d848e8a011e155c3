"""Webhook delivery: a signed JSON POST for SMS gateways, WeChat and others.

Each request carries three headers besides Content-Type:

* ``X-CRM-Timestamp``: the Unix time of the request, in seconds.
* ``X-CRM-Signature``: ``sha256=`` and the hex HMAC-SHA256 of the timestamp,
  a dot and the raw body, keyed with settings.CRM_WEBHOOK_SECRET. A receiver
  recomputes it, compares in constant time and rejects old timestamps.
* ``Idempotency-Key``: the message key, such as ``tier-change:12``. The
  outbox marks a message sent only after the receiver responded, so a crash
  in between sends it again. The receiver drops a key it has already seen.

Any response other than 2xx, a redirect included, counts as a failure and
the outbox retries the message.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder

from members.delivery import Backend, DeliveryError
from members.models import OutboxMessage
from members.notifications import render_message

TIMESTAMP_HEADER = "X-CRM-Timestamp"
SIGNATURE_HEADER = "X-CRM-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """Return the X-CRM-Signature value for a timestamp and request body."""
    signed = timestamp.encode("ascii") + b"." + body
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def payload(message: OutboxMessage) -> dict[str, Any]:
    """Build the JSON document posted for ``message``.

    It carries the member's id and E.164 phone (empty if unknown) for the
    receiver to address the member, and the subject and body rendered in
    the member's language.
    """
    rendered = render_message(message)
    return {
        "key": message.key,
        "topic": message.topic,
        "member_id": message.member_id,
        "phone_e164": message.member.phone_e164,
        "language": message.language,
        "subject": rendered.subject,
        "body": rendered.body,
        "params": message.params,
        "created_at": message.created_at,
    }


class _RejectRedirects(urllib.request.HTTPRedirectHandler):
    # Following a redirect would post the message to an address other than
    # CRM_WEBHOOK_URL, so a 3xx response is raised as an HTTPError instead.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_RejectRedirects)


class WebhookBackend(Backend):
    """Messages posted as signed JSON to settings.CRM_WEBHOOK_URL."""

    name = "webhook"

    def send(self, message: OutboxMessage) -> None:
        url = settings.CRM_WEBHOOK_URL
        if urlsplit(url).scheme not in {"http", "https"}:
            raise DeliveryError(
                "CRM_WEBHOOK_URL is not an http or https URL. Set it to the "
                "receiver's address."
            )
        body = json.dumps(payload(message), cls=DjangoJSONEncoder).encode("utf-8")
        timestamp = str(int(time.time()))
        # The scheme was checked above, so no file: or custom URL is opened.
        request = urllib.request.Request(  # noqa: S310
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: timestamp,
                SIGNATURE_HEADER: sign(settings.CRM_WEBHOOK_SECRET, timestamp, body),
                IDEMPOTENCY_HEADER: message.key,
            },
        )
        timeout = settings.CRM_WEBHOOK_TIMEOUT_SECONDS
        try:
            with _opener.open(request, timeout=timeout) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            raise DeliveryError(
                f"The webhook responded with HTTP {error.code}."
            ) from error
        except TimeoutError as error:
            raise DeliveryError(
                f"The webhook request timed out after {timeout} seconds."
            ) from error
        except urllib.error.URLError as error:
            raise DeliveryError(
                f"The webhook request failed: {error.reason}."
            ) from error
        except OSError as error:
            raise DeliveryError(
                f"The webhook request failed: {type(error).__name__}."
            ) from error
        if not 200 <= status < 300:
            raise DeliveryError(f"The webhook responded with HTTP {status}.")
