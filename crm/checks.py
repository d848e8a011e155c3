"""System checks on settings that would otherwise fail only under load."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def check_job_queue_timeouts(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    """Reject a django-q2 setup whose ``timeout`` is not below ``retry``.

    The broker hands a job to another worker after ``retry`` seconds. If the
    first worker may still be running it (``timeout`` >= ``retry``), the job
    runs twice at once.
    """
    cluster = getattr(settings, "Q_CLUSTER", {})
    timeout = cluster.get("timeout")
    retry = cluster.get("retry")
    if timeout is None or retry is None or timeout < retry:
        return []
    return [
        Error(
            f"Q_CLUSTER timeout ({timeout} s) must be below retry ({retry} s), "
            "or a slow job is handed to a second worker while still running.",
            hint="Lower Q_TIMEOUT or raise Q_RETRY.",
            id="crm.E001",
        )
    ]
