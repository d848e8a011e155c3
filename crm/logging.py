"""A logging filter that masks phones and e-mail addresses in every record.

``crm.settings.LOGGING`` installs :class:`MaskPersonalDataFilter` on its
handlers, so a log call that quotes a member's phone or e-mail, directly or
inside an exception message, is written masked (138****5678, a***@x.com).
Code should still log ids only: the filter is the safety net, and it cannot
recognise names.
"""

from __future__ import annotations

import logging
import re

from members.privacy import mask_text

_EXCEPTION_FORMATTER = logging.Formatter()


# The form encodings that hide an e-mail's @ and the spaces in a phone.
_ENCODED_AT = re.compile(r"%40", re.IGNORECASE)
_ENCODED_SPACE_IN_NUMBER = re.compile(r"(?<=\d)(?:\+|%20)(?=\d)", re.IGNORECASE)


def mask_logged_text(text: str) -> str:
    """Mask ``text``, reading URL-encoded e-mails and phones as sent.

    A search form sends "a@b.cn" as ``a%40b.cn`` and "138 1234 5678" as
    ``138+1234+5678``, which the plain patterns would not find, so those two
    encodings are decoded first. The text is logged decoded only where that
    let the patterns find something to mask.
    """
    decoded = _ENCODED_SPACE_IN_NUMBER.sub(" ", _ENCODED_AT.sub("@", text))
    masked = mask_text(decoded)
    if decoded != text and masked == decoded:
        return mask_text(text)
    return masked


class MaskPersonalDataFilter(logging.Filter):
    """Render each record's message with its args, then mask it in place.

    The record keeps the masked text as ``msg`` with no ``args``, so every
    handler that runs after this one, and every formatter, gets only the
    masked text. Exception and stack texts are formatted and masked too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = self._render(record)
        except (TypeError, ValueError):
            # A call whose args do not fit its format string: keep both as
            # text rather than lose the record.
            message = mask_logged_text(f"{record.msg} {record.args!r}")
        record.msg = message
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = _EXCEPTION_FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True

    def _render(self, record: logging.LogRecord) -> str:
        # runserver logs '"%s" %s %s' with the request line, the status code
        # and the size. Masking the rendered line would read "200 1558" as
        # a phone, so only the request line is masked.
        args = record.args
        if record.name == "django.server" and isinstance(args, tuple) and args:
            first, *rest = args
            return str(record.msg) % (mask_logged_text(str(first)), *rest)
        return mask_logged_text(record.getMessage())
