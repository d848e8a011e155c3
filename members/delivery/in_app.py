"""In-app delivery: the member page lists the stored message."""

from __future__ import annotations

from members.delivery import Backend
from members.models import OutboxMessage


class InAppBackend(Backend):
    """Messages shown on the member page. Storing one delivers it."""

    name = "in_app"
    delivered_on_insert = True

    def send(self, message: OutboxMessage) -> None:
        # Nothing to deliver: the member page reads the stored row. A message
        # sent again from the admin is simply marked sent.
        return None
