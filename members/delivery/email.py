"""E-mail delivery through Django's mail framework (the EMAIL_* settings)."""

from __future__ import annotations

import smtplib

from django.core.mail import send_mail

from members.delivery import Backend, DeliveryError, RecipientMissing
from members.models import OutboxMessage
from members.notifications import render_message


class EmailBackend(Backend):
    """Messages sent as plain-text e-mail to Member.email.

    A member without an e-mail address raises RecipientMissing, so the
    message is marked skipped rather than retried.
    """

    name = "email"

    def send(self, message: OutboxMessage) -> None:
        address = message.member.email
        if not address:
            raise RecipientMissing("The member has no e-mail address.")
        rendered = render_message(message)
        try:
            send_mail(rendered.subject, rendered.body, None, [address])
        except smtplib.SMTPResponseException as error:
            # The server's text can quote the address, so only the code is kept.
            raise DeliveryError(
                f"The mail server rejected the e-mail with code {error.smtp_code}."
            ) from error
        except (smtplib.SMTPException, OSError) as error:
            raise DeliveryError(
                f"Sending the e-mail failed: {type(error).__name__}."
            ) from error
