"""Rate limits per channel token, and the purge of old idempotency records."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone, translation
from django_q.models import Schedule
from rest_framework.test import APIClient

from members.api_auth import issue_token
from members.models import Activity, Channel, IdempotencyRecord
from members.retention import purge_idempotency_records
from tests.conftest import make_member

EVENTS = "/api/v1/events/"


@pytest.fixture(autouse=True)
def english():
    with translation.override("en"):
        yield


def client_for(channel: Channel) -> APIClient:
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_token(channel, 'till')[1]}")
    return client


def event(reference: str) -> dict[str, object]:
    return {
        "external_id": "C-1",
        "reference": reference,
        "occurred_at": (timezone.now() - dt.timedelta(minutes=5)).isoformat(),
        "amount": "10.00",
        "kind": "purchase",
    }


@pytest.fixture
def tmall(db) -> Channel:
    return Channel.objects.create(code="tmall", name="Tmall", kind="ecommerce")


def test_token_over_rate_gets_429(settings, ladder, store):
    settings.CRM_API_TOKEN_RATE = "3/min"
    make_member(store, "C-1")
    till = client_for(store)

    statuses = [
        till.post(EVENTS, event(f"R-{n}"), format="json").status_code for n in range(4)
    ]
    refused = till.post(EVENTS, event("R-9"), format="json")

    assert statuses == [201, 201, 201, 429]
    assert refused.status_code == 429
    assert refused.json()["error"] == "throttled"
    assert int(refused["Retry-After"]) > 0
    assert Activity.objects.count() == 3


def test_each_token_has_its_own_budget(settings, ladder, store, tmall):
    settings.CRM_API_TOKEN_RATE = "1/min"
    make_member(store, "C-1")
    make_member(tmall, "C-1")
    store_till, second_till, shop = (
        client_for(store),
        client_for(store),
        client_for(tmall),
    )

    assert store_till.post(EVENTS, event("R-1"), format="json").status_code == 201
    assert store_till.post(EVENTS, event("R-2"), format="json").status_code == 429
    # Another token of the same channel, and another channel, are not held up.
    assert second_till.post(EVENTS, event("R-3"), format="json").status_code == 201
    assert shop.post(EVENTS, event("R-1"), format="json").status_code == 201


def test_empty_rate_turns_the_limit_off(settings, ladder, store):
    settings.CRM_API_TOKEN_RATE = ""
    make_member(store, "C-1")
    till = client_for(store)

    statuses = {
        till.post(EVENTS, event(f"R-{n}"), format="json").status_code for n in range(5)
    }

    assert statuses == {201}


def test_schema_documents_the_429(client, db):
    schema = client.get("/api/schema/?format=json").json()

    responses = schema["paths"][EVENTS]["post"]["responses"]
    assert "429" in responses


def record_at(channel: Channel, key: str, created_at: dt.datetime) -> None:
    row = IdempotencyRecord.objects.create(
        channel=channel, key=key, request_hash="0" * 64, status_code=201
    )
    IdempotencyRecord.objects.filter(pk=row.pk).update(created_at=created_at)


def test_purge_keeps_recent_records(settings, store):
    settings.CRM_IDEMPOTENCY_KEY_DAYS = 30
    now = timezone.now()
    record_at(store, "old", now - dt.timedelta(days=31))
    record_at(store, "edge", now - dt.timedelta(days=30) + dt.timedelta(seconds=1))
    record_at(store, "new", now - dt.timedelta(hours=1))

    deleted = purge_idempotency_records(now=now)

    assert deleted == 1
    assert sorted(IdempotencyRecord.objects.values_list("key", flat=True)) == [
        "edge",
        "new",
    ]


def test_purge_backlog_in_chunks(settings, store, monkeypatch):
    monkeypatch.setattr("members.retention.PURGE_CHUNK", 7)
    long_ago = timezone.now() - dt.timedelta(days=400)
    for n in range(20):
        record_at(store, f"k-{n}", long_ago)

    assert purge_idempotency_records() == 20
    assert not IdempotencyRecord.objects.exists()


def test_purged_key_replay_stores_once(settings, ladder, store):
    make_member(store, "C-1")
    till = client_for(store)
    body = event("R-1")
    first = till.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    IdempotencyRecord.objects.update(created_at=timezone.now() - dt.timedelta(days=90))

    purge_idempotency_records()
    again = till.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert Activity.objects.filter(reference="R-1").count() == 1


def test_purge_is_scheduled_daily(db):
    schedule = Schedule.objects.get(name="purge-idempotency-records")

    assert schedule.func == "members.retention.purge_idempotency_records"
    assert schedule.schedule_type == Schedule.DAILY
