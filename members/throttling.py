"""Request rate limits for the channel endpoints, one budget per channel token.

A till or shop that loops on an error would otherwise flood the event API
and slow it for every other channel. Each token gets
CRM_API_TOKEN_RATE requests (for example "1200/min"); a batch of up to
CRM_API_MAX_BATCH events counts as one request. Past the budget the API
responds with 429 and a Retry-After header. A client that retries later
with the same Idempotency-Key or reference gets its event stored once.

The counts live in the shared cache (files on one host, or Redis), so
every web process of the site draws on the same budget.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from members.models import ChannelToken

logger = logging.getLogger(__name__)


class ChannelTokenRateThrottle(SimpleRateThrottle):
    """Limit each channel token to CRM_API_TOKEN_RATE requests."""

    scope = "channel_token"

    def get_rate(self) -> str | None:
        # Read on each request, so tests and overridden settings take effect.
        return settings.CRM_API_TOKEN_RATE or None

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        token = request.auth
        if not isinstance(token, ChannelToken):
            # Requests without a channel token are rejected by authentication.
            return None
        return self.cache_format % {"scope": self.scope, "ident": token.pk}

    def throttle_failure(self) -> bool:
        logger.warning(
            "event API rate limit reached key=%s rate=%s", self.key, self.rate
        )
        return False
