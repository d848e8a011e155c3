"""Pluggable delivery backends for outbox messages.

settings.CRM_NOTIFICATION_BACKENDS lists the backends every message goes out
on, by built-in name ("in_app", "email", "webhook") or by the dotted path of
a Backend subclass. members.jobs calls each backend's send() for the
messages on its channel.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import urlsplit

from django.conf import settings
from django.core import checks
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from members.models import OutboxMessage

BUILTIN_BACKENDS = {
    "in_app": "members.delivery.in_app.InAppBackend",
    "email": "members.delivery.email.EmailBackend",
    "webhook": "members.delivery.webhook.WebhookBackend",
}


class DeliveryError(Exception):
    """Raised by a backend when a send failed, so the outbox retries the message.

    The message text is stored on the message and logged, so it must not
    contain personal data such as an address or the message body.
    """


class RecipientMissing(Exception):
    """Raised when the member has no address on the backend's channel.

    The outbox marks the message skipped instead of retrying it.
    """


class Backend:
    """A channel that messages go out on. Subclasses set ``name`` and send()."""

    # The value stored in OutboxMessage.channel for this backend's messages.
    name: ClassVar[str]
    # True when storing the message delivers it, as for the member page. Such
    # messages are created already sent.
    delivered_on_insert: ClassVar[bool] = False

    def send(self, message: OutboxMessage) -> None:
        """Deliver ``message`` or raise DeliveryError or RecipientMissing."""
        raise NotImplementedError


def configured_backends() -> dict[str, Backend]:
    """Instantiate the backends in CRM_NOTIFICATION_BACKENDS, keyed by channel.

    Raises ImportError for a name that is neither built in nor importable.
    """
    backends: dict[str, Backend] = {}
    for name in settings.CRM_NOTIFICATION_BACKENDS:
        backend_class = import_string(BUILTIN_BACKENDS.get(name, name))
        backends[backend_class.name] = backend_class()
    return backends


def check_notification_settings(
    app_configs: Any, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Report unknown backends and a webhook backend without URL or secret."""
    errors: list[checks.CheckMessage] = []
    for name in settings.CRM_NOTIFICATION_BACKENDS:
        try:
            import_string(BUILTIN_BACKENDS.get(name, name))
        except ImportError:
            errors.append(
                checks.Error(
                    f"CRM_NOTIFICATION_BACKENDS contains {name!r}, which is neither "
                    f"a built-in backend ({', '.join(BUILTIN_BACKENDS)}) nor an "
                    "importable class path.",
                    id="members.E001",
                )
            )
    if "webhook" in settings.CRM_NOTIFICATION_BACKENDS:
        if urlsplit(settings.CRM_WEBHOOK_URL).scheme not in {"http", "https"}:
            errors.append(
                checks.Error(
                    f"CRM_WEBHOOK_URL={settings.CRM_WEBHOOK_URL!r} is not an http or "
                    "https URL. Set it, or remove webhook from "
                    "CRM_NOTIFICATION_BACKENDS.",
                    id="members.E002",
                )
            )
        if not settings.CRM_WEBHOOK_SECRET:
            errors.append(
                checks.Error(
                    "CRM_WEBHOOK_SECRET is empty, so webhook requests cannot be "
                    "signed. Set it to a random value shared with the receiver.",
                    id="members.E003",
                )
            )
    return errors
