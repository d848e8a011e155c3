"""File sizes in the units staff see, and the upload size limit."""

from __future__ import annotations

import math

from django.conf import settings

# Sizes are shown in MB of 1024 * 1024 bytes, the unit Windows Explorer
# shows as "MB", so a 50 MB limit in the settings reads as "50 MB".
_BYTES_PER_MB = 1024 * 1024


def megabytes(size: int, *, round_up: bool = False) -> str:
    """Return a size in bytes as MB with at most one decimal ("52.4", "50").

    Rounding is down, or up with ``round_up``, so a file one byte over a
    limit never shows the limit's own number.
    """
    tenths = size * 10 / _BYTES_PER_MB
    tenths = math.ceil(tenths) if round_up else math.floor(tenths)
    return f"{tenths / 10:,.1f}".removesuffix(".0")


def size_limit_message(size: int, max_bytes: int | None = None) -> str | None:
    """Return why a file of ``size`` bytes is too large, or None if it is not.

    The limit is ``max_bytes``, by default settings.CRM_IMPORT_MAX_BYTES.
    """
    if max_bytes is None:
        max_bytes = settings.CRM_IMPORT_MAX_BYTES
    if size <= max_bytes:
        return None
    return (
        f"The file is {megabytes(size, round_up=True)} MB, more than the "
        f"{megabytes(max_bytes)} MB limit. Split it into smaller files and "
        "import each one."
    )
