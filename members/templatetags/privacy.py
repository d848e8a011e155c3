"""Template filters that mask personal data for users without the permission."""

from __future__ import annotations

from typing import Any

from django import template

from members.privacy import can_view_personal_data, mask_text

register = template.Library()


@register.filter
def personal_text_for(value: Any, user: Any) -> str:
    """Mask phones and e-mails inside ``value`` unless ``user`` may see them.

    Usage: ``{{ issue.value|personal_text_for:request.user }}``. A user of
    None gets the masked text.
    """
    text = "" if value is None else str(value)
    return text if can_view_personal_data(user) else mask_text(text)
