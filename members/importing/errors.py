"""Errors raised while reading and cleaning an import file."""

from __future__ import annotations


class FileRejected(Exception):
    """Raised when a whole file is rejected, so nothing from it is saved.

    Staff see the message unchanged, so it names the column, range or
    encoding at fault and the next step to take.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidValue(ValueError):
    """Raised by a value cleaner; the row cleaner adds the column and value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
