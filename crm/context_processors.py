from django.conf import settings
from django.http import HttpRequest


def program(request: HttpRequest) -> dict[str, object]:
    """Expose program-wide settings that every page shows."""
    return {
        "CRM_CURRENCY": settings.CRM_CURRENCY,
        "CRM_DATA_NOTICE": settings.CRM_DATA_NOTICE,
    }
