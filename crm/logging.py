"""A logging filter that masks phones and e-mail addresses in every record.

``crm.settings.LOGGING`` installs :class:`MaskPersonalDataFilter` on its
handlers, so a log call that quotes a member's phone or e-mail, directly or
inside an exception message, is written masked (138****5678, a***@x.com).
Code should still log ids only: the filter is the safety net, and it cannot
recognise names.
"""

from __future__ import annotations

import logging

from members.privacy import mask_text

_EXCEPTION_FORMATTER = logging.Formatter()


class MaskPersonalDataFilter(logging.Filter):
    """Render each record's message with its args, then mask it in place.

    The record keeps the masked text as ``msg`` with no ``args``, so every
    handler that runs after this one, and every formatter, gets only the
    masked text. Exception and stack texts are formatted and masked too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A call whose args do not fit its format string: keep both as
            # text rather than lose the record.
            message = f"{record.msg} {record.args!r}"
        record.msg = mask_text(message)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = _EXCEPTION_FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_text(record.exc_text)
        if record.stack_info:
            record.stack_info = mask_text(record.stack_info)
        return True
