"""File sizes in the units staff see, and the upload size limit."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

logger = logging.getLogger(__name__)

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


class RequestSizeLimitMiddleware:
    """Reject a request whose declared body exceeds settings.CRM_UPLOAD_MAX_BYTES.

    It responds with 413 before anything reads the body, so an oversized upload
    is neither parsed nor spooled to a temporary file. It must come before
    CsrfViewMiddleware, which reads the form data of every POST. Under WSGI
    Django never reads past CONTENT_LENGTH, so the declared length bounds
    the body; the forms then apply their own, smaller caps.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        max_bytes = settings.CRM_UPLOAD_MAX_BYTES
        if declared > max_bytes:
            logger.warning(
                "request body rejected path=%s bytes=%d limit=%d",
                request.path, declared, max_bytes,
            )  # fmt: skip
            message = (
                f"The upload is {megabytes(declared, round_up=True)} MB, more "
                f"than the {megabytes(max_bytes)} MB this site accepts in one "
                "request. Split the file into smaller files and import each one."
            )
            return HttpResponse(
                message, status=413, content_type="text/plain; charset=utf-8"
            )
        return self.get_response(request)
