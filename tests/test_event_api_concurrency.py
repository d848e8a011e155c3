"""Parallel replays of one event through the API store it once (PostgreSQL).

The in-memory SQLite test database fails a concurrent writer at once with
"database table is locked", so these tests run on PostgreSQL only.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from members.api_auth import issue_token
from members.models import Activity, IdempotencyRecord
from tests.conftest import make_member, record
from tiers.evaluation import evaluate
from tiers.models import TierChange

ON_POSTGRESQL = os.environ.get("DATABASE_URL", "").startswith("postgres")
REPLAYS = 100
# Each thread uses its own database connection, and the test server's
# max_connections (100 by default) is shared with other test runs, so 100
# replays go through 20 connections at a time.
THREADS = 20

pytestmark = [
    pytest.mark.skipif(not ON_POSTGRESQL, reason="needs DATABASE_URL=postgres://..."),
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture
def setup(ladder, store):
    """A member ¥1 short of Silver, a token, and one purchase of ¥1 to replay."""
    member = make_member(store, "C-1001")
    record(member, store, "purchase", timezone.now() - dt.timedelta(days=3), "999")
    evaluate([member.pk])
    token = issue_token(store, "tills")[1]
    body = {
        "external_id": "C-1001",
        "reference": "R-RACE",
        "occurred_at": (timezone.now() - dt.timedelta(minutes=1)).isoformat(),
        "amount": "1.00",
        "kind": "purchase",
    }
    return member, token, body


def replay(token: str, body: dict, headers: dict[str, str]) -> list[tuple[int, dict]]:
    """POST ``body`` REPLAYS times from THREADS threads released together."""
    start = threading.Barrier(THREADS, timeout=30)

    def post(number: int) -> tuple[int, dict]:
        try:
            if number < THREADS:
                start.wait()
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
            response = client.post("/api/v1/events/", body, format="json", **headers)
            return response.status_code, response.json()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(post, range(REPLAYS)))


def test_parallel_replays_store_one_row(setup, ladder):
    member, token, body = setup

    responses = replay(token, body, {})

    statuses = Counter(status for status, _ in responses)
    assert statuses == {201: 1, 200: REPLAYS - 1}
    assert Activity.objects.filter(reference="R-RACE").count() == 1
    promoted = [data for status, data in responses if data["promoted"]]
    assert len(promoted) == 1
    assert promoted[0]["status"] == "created"
    assert (
        TierChange.objects.filter(
            member=member, reason=TierChange.Reason.PROMOTION
        ).count()
        == 1
    )
    member.refresh_from_db()
    assert member.tier == ladder["silver"]


def test_parallel_replays_with_key_share_one_response(setup):
    _, token, body = setup

    responses = replay(token, body, {"HTTP_IDEMPOTENCY_KEY": "race-key"})

    assert {status for status, _ in responses} == {201}
    first = responses[0][1]
    assert all(data == first for _, data in responses)
    assert first["promoted"] is True
    assert Activity.objects.filter(reference="R-RACE").count() == 1
    assert IdempotencyRecord.objects.count() == 1
