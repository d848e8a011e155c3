"""Admin guards that keep free text out of reach of URL filters.

Django's admin accepts a filter on any of a model's own fields from the
query string (``?reason__contains=138``), even when the page shows the
field masked. One guess at a time, such filters rebuild a phone or e-mail
quoted in a reason, an explanation or an audit detail, and they put the
guess into the URL.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models.constants import LOOKUP_SEP
from django.http import HttpRequest


class FreeTextLookupGuard:
    """Refuse URL filters on the model's text and JSON fields (400)."""

    model: type[models.Model]

    def lookup_allowed(
        self, lookup: str, value: str, request: HttpRequest | None = None
    ) -> bool:
        name = lookup.split(LOOKUP_SEP, 1)[0]
        try:
            field: Any = self.model._meta.get_field(name)
        except FieldDoesNotExist:
            field = None
        if isinstance(field, models.TextField | models.JSONField):
            return False
        return super().lookup_allowed(lookup, value, request)  # type: ignore[misc]
