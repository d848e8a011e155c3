"""The channel event API: tokens, single events, batches, idempotency, reads.

Each test member starts in Bronze. Silver needs ¥1,000 of net spend in 365
days (see conftest.standard_spec).
"""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import json
import logging
import uuid
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.urls import reverse
from django.utils import timezone, translation
from django_q.models import Schedule
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

from members import ingest
from members.api_auth import issue_token
from members.models import (
    Activity,
    Channel,
    ChannelIdentity,
    ChannelToken,
    IdempotencyRecord,
    Member,
)
from tests.conftest import make_member, record
from tiers.evaluation import evaluate
from tiers.jobs import evaluate_members
from tiers.models import TierChange

EVENTS = "/api/v1/events/"
BATCH = "/api/v1/events/batch/"


def member_url(member: Member) -> str:
    return f"/api/v1/members/{member.public_id}/"


@pytest.fixture(autouse=True)
def english():
    with translation.override("en"):
        yield


@pytest.fixture
def tmall(db) -> Channel:
    return Channel.objects.create(code="tmall", name="Tmall", kind="ecommerce")


@pytest.fixture
def store_token(store) -> str:
    return issue_token(store, "Xuhui tills")[1]


@pytest.fixture
def tmall_token(tmall) -> str:
    return issue_token(tmall, "Tmall shop")[1]


def api_client(token: str | None) -> APIClient:
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
    if token is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def till(store_token) -> APIClient:
    """The Xuhui store's tills, calling with the store's token."""
    return api_client(store_token)


def minutes_ago(minutes: int) -> dt.datetime:
    return timezone.now() - dt.timedelta(minutes=minutes)


def placed_member(channel: Channel, external_id: str, spent: str) -> Member:
    """A member of ``channel`` in Bronze with ``spent`` yuan spent 30 days ago."""
    member = make_member(channel, external_id, name="Li Lei")
    member.phone = "13800138000"
    member.email = "lilei@example.com"
    member.save()
    if Decimal(spent):
        record(
            member, channel, "purchase", timezone.now() - dt.timedelta(days=30), spent
        )
    evaluate([member.pk])
    member.refresh_from_db()
    return member


@pytest.fixture
def lei(ladder, store) -> Member:
    """Li Lei, ¥999 spent: one more yuan promotes him to Silver."""
    return placed_member(store, "C-1001", "999")


# One fixed time, so that two events built by event() have the same content.
TEN_MINUTES_AGO = minutes_ago(10).isoformat()


def event(**overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "external_id": "C-1001",
        "reference": "R-1",
        "occurred_at": TEN_MINUTES_AGO,
        "amount": "1.00",
        "kind": "purchase",
    }
    values.update(overrides)
    return values


def promotions(member: Member) -> int:
    return TierChange.objects.filter(
        member=member, reason=TierChange.Reason.PROMOTION
    ).count()


# Tokens and scoping


def test_missing_token_is_401(lei):
    response = api_client(None).post(EVENTS, event(), format="json")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert response.json()["error"] == "not_authenticated"
    assert not Activity.objects.filter(reference="R-1").exists()


@pytest.mark.parametrize(
    "header",
    [
        "Bearer 0123456789ab.wrong-secret",
        "Bearer no-dot-in-this-token",
        "Bearer two parts",
        "Bearer",
    ],
)
def test_bad_token_is_401(lei, store_token, header):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)

    response = client.post(EVENTS, event(), format="json")

    assert response.status_code == 401
    assert response.json()["error"] == "authentication_failed"


def test_wrong_secret_with_real_prefix_is_401(lei, store_token):
    prefix = store_token.partition(".")[0]

    response = api_client(f"{prefix}.not-the-secret").post(
        EVENTS, event(), format="json"
    )

    assert response.status_code == 401


def test_revoked_token_is_401(lei, store_token):
    ChannelToken.objects.update(revoked_at=timezone.now())

    response = api_client(store_token).post(EVENTS, event(), format="json")

    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    assert not Activity.objects.filter(reference="R-1").exists()


def test_token_stored_only_as_hash(store, store_token):
    row = ChannelToken.objects.get()

    assert row.token_hash == hashlib.sha256(store_token.encode()).hexdigest()
    assert store_token.startswith(row.prefix + ".")
    stored = json.dumps(list(ChannelToken.objects.values()), default=str)
    assert store_token not in stored
    assert store_token.partition(".")[2] not in stored


def test_last_used_at_recorded(lei, till):
    assert ChannelToken.objects.get().last_used_at is None

    till.post(EVENTS, event(), format="json")

    assert ChannelToken.objects.get().last_used_at is not None


@pytest.mark.parametrize("named", ["tmall", "TMALL", "other"])
def test_event_naming_other_channel_is_403(lei, tmall, till, named):
    response = till.post(EVENTS, event(channel=named), format="json")

    assert response.status_code == 403
    body = response.json()
    assert body["error"] == "wrong_channel"
    assert "store-xuhui" in body["detail"]
    assert not Activity.objects.filter(reference="R-1").exists()


def test_batch_naming_other_channel_is_403(lei, tmall, till):
    in_envelope = {"channel": "tmall", "events": [event()]}
    in_item = {"events": [event(reference="R-2"), event(channel="tmall")]}

    for body in (in_envelope, in_item):
        response = till.post(BATCH, body, format="json")
        assert response.status_code == 403
        assert response.json()["error"] == "wrong_channel"
    assert (
        not Activity.objects.exists()
        or not Activity.objects.filter(reference__in=["R-1", "R-2"]).exists()
    )


def test_event_naming_own_channel_is_accepted(lei, till):
    response = till.post(EVENTS, event(channel="Store-Xuhui"), format="json")

    assert response.status_code == 201


def test_member_of_other_channel_not_matched(ladder, store, tmall, till):
    placed_member(tmall, "C-1001", "0")

    response = till.post(EVENTS, event(), format="json")

    assert response.status_code == 422
    body = response.json()
    assert body["status"] == "invalid"
    assert "channel store-xuhui" in body["errors"]["external_id"][0]
    assert not Activity.objects.filter(reference="R-1").exists()


def test_channel_token_not_accepted_elsewhere(lei, store_token):
    client = api_client(store_token)

    grants = client.get(
        reverse("benefits:member-grants", kwargs={"public_id": lei.public_id})
    )
    admin = client.get("/admin/members/member/")

    assert grants.status_code in (401, 403)
    assert admin.status_code == 302
    assert "/admin/login/" in admin["Location"]


def test_same_reference_in_two_channels_is_two_events(lei, tmall, tmall_token, till):
    identity = ChannelIdentity.objects.create(
        member=lei, channel=tmall, external_id="TM-9"
    )

    first = till.post(EVENTS, event(), format="json")
    second = api_client(tmall_token).post(
        EVENTS, event(external_id=identity.external_id), format="json"
    )

    assert first.status_code == 201
    assert second.status_code == 201
    assert Activity.objects.filter(reference="R-1").count() == 2


# Single events


def test_purchase_promotes_at_once(lei, till, ladder):
    response = till.post(EVENTS, event(amount="1.00"), format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["status"] == "created"
    assert body["member"] == str(lei.public_id)
    assert body["tier_before"] == "Bronze"
    assert body["tier_after"] == "Silver"
    assert body["promoted"] is True
    assert body["tiers_evaluated"] is True
    lei.refresh_from_db()
    assert lei.tier == ladder["silver"]
    activity = Activity.objects.get(reference="R-1")
    assert activity.source == Activity.Source.API
    assert activity.amount == Decimal("1.00")


def test_purchase_below_threshold_not_promoted(ladder, store, till):
    member = placed_member(store, "C-1001", "100")

    body = till.post(EVENTS, event(amount="10"), format="json").json()

    assert body["tier_before"] == "Bronze"
    assert body["tier_after"] == "Bronze"
    assert body["promoted"] is False
    assert promotions(member) == 0


def test_repeat_is_duplicate(lei, till):
    first = till.post(EVENTS, event(), format="json")
    again = till.post(EVENTS, event(amount="1"), format="json")

    assert first.status_code == 201
    assert again.status_code == 200
    body = again.json()
    assert body["status"] == "duplicate"
    assert body["promoted"] is False
    assert body["tier_after"] == "Silver"
    assert Activity.objects.filter(reference="R-1").count() == 1
    assert promotions(lei) == 1


def test_reference_with_other_content_is_conflict(lei, till):
    till.post(EVENTS, event(amount="1.00"), format="json")

    response = till.post(EVENTS, event(amount="2.00"), format="json")

    assert response.status_code == 409
    body = response.json()
    assert body["status"] == "conflict"
    assert "amount" in body["detail"]
    assert body["promoted"] is False
    assert Activity.objects.get(reference="R-1").amount == Decimal("1.00")


@pytest.mark.parametrize(
    ("amount", "status", "expected"),
    [("1.00", 200, "duplicate"), ("2.00", 409, "conflict")],
)
def test_row_stored_by_parallel_request(
    lei, till, monkeypatch, amount, status, expected
):
    """A row that appears between the look-up and the INSERT is not stored twice."""
    till.post(EVENTS, event(amount="1.00"), format="json")
    real_stored_content = ingest._stored_content
    calls = []

    def miss_first_lookup(channel, references):
        # The first look-up runs before the INSERT: report nothing stored yet,
        # as a parallel request that commits in between would see it.
        calls.append(list(references))
        if len(calls) == 1:
            return {}
        return real_stored_content(channel, references)

    monkeypatch.setattr(ingest, "_stored_content", miss_first_lookup)

    response = till.post(EVENTS, event(amount=amount), format="json")

    assert len(calls) == 2
    assert response.status_code == status
    assert response.json()["status"] == expected
    assert Activity.objects.filter(reference="R-1").count() == 1
    assert Activity.objects.get(reference="R-1").amount == Decimal("1.00")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"amount": "12.345"}, "amount"),
        ({"amount": "abc"}, "amount"),
        ({"amount": "1e3"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": "1000000000000"}, "amount"),
        ({"amount": "-5"}, "amount"),
        ({"kind": "visit", "amount": "5"}, "amount"),
        ({"occurred_at": "yesterday"}, "occurred_at"),
        ({"occurred_at": "1980-01-01T00:00:00+08:00"}, "occurred_at"),
        ({"occurred_at": "2999-01-01T00:00:00+08:00"}, "occurred_at"),
        ({"occurred_at": 1717200000}, "occurred_at"),
        ({"kind": "gift"}, "kind"),
        ({"quantity": 0}, "quantity"),
        ({"quantity": -1}, "quantity"),
        ({"reference": ""}, "reference"),
        ({"reference": "\u200b"}, "reference"),
        ({"reference": "x" * 101}, "reference"),
        ({"reference": "nul\x00byte"}, "reference"),
        ({"external_id": "   "}, "external_id"),
        ({"external_id": None}, "external_id"),
    ],
)
def test_invalid_event_is_422(lei, till, overrides, field):
    response = till.post(EVENTS, event(**overrides), format="json")

    assert response.status_code == 422
    body = response.json()
    assert body["status"] == "invalid"
    assert field in body["errors"]
    assert not Activity.objects.filter(member=lei, amount__lt=999).exists()


def test_missing_fields_are_422(lei, till):
    response = till.post(EVENTS, {}, format="json")

    assert response.status_code == 422
    errors = response.json()["errors"]
    assert set(errors) == {"external_id", "reference", "occurred_at", "amount", "kind"}


def test_refund_stored_negative(lei, till):
    positive = till.post(
        EVENTS, event(reference="RF-1", kind="refund", amount="50"), format="json"
    )
    negative = till.post(
        EVENTS, event(reference="RF-2", kind="refund", amount="-20.5"), format="json"
    )

    assert positive.status_code == 201
    assert negative.status_code == 201
    assert Activity.objects.get(reference="RF-1").amount == Decimal("-50.00")
    assert Activity.objects.get(reference="RF-2").amount == Decimal("-20.50")


def test_amount_as_json_number_accepted(lei, till):
    response = till.post(EVENTS, event(amount=12.5), format="json")

    assert response.status_code == 201
    assert Activity.objects.get(reference="R-1").amount == Decimal("12.50")


def test_naive_time_read_in_program_zone(lei, till):
    local_now = timezone.localtime()
    naive = (local_now - dt.timedelta(hours=1)).replace(microsecond=0, tzinfo=None)

    till.post(EVENTS, event(occurred_at=naive.isoformat()), format="json")

    stored = timezone.localtime(Activity.objects.get(reference="R-1").occurred_at)
    assert stored.replace(tzinfo=None) == naive


def test_identifiers_folded_like_imports(lei, till):
    response = till.post(
        EVENTS,
        event(external_id=" Ｃ-１００１ ", reference="ＲＥＦ-１"),
        format="json",
    )

    assert response.status_code == 201
    assert Activity.objects.filter(reference="REF-1", member=lei).exists()


def test_non_object_body_is_400(lei, till):
    response = till.post(EVENTS, [event()], format="json")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid"


def test_malformed_json_is_400(lei, till):
    response = till.post(EVENTS, "{not json", content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"] == "parse_error"


@pytest.mark.parametrize("url", [EVENTS, BATCH])
@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[" * 100_000, "nested too deeply"),
        ('{"events": [{"reference": "\\ud800"}]}', "lone surrogate"),
        ('{"reference": "\\udfff", "external_id": "C-1001"}', "lone surrogate"),
    ],
)
def test_hostile_json_is_400(lei, till, url, body, message):
    response = till.post(url, body, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"] == "parse_error"
    assert message in response.json()["detail"]


def test_invalid_reference_not_repeated(lei, till):
    batch = {"events": [event(reference="nul\x00byte", amount="x")]}

    response = till.post(BATCH, batch, format="json", HTTP_IDEMPOTENCY_KEY="nul")

    assert response.status_code == 207
    result = response.json()["events"][0]
    assert result["reference"] is None
    assert set(result["errors"]) == {"reference", "amount"}
    assert IdempotencyRecord.objects.get().status_code == 207


def test_valid_reference_repeated_for_invalid_event(lei, till):
    response = till.post(EVENTS, event(reference=" R-9 ", amount="x"), format="json")

    assert response.json()["reference"] == "R-9"


def test_form_body_is_415(lei, till):
    response = till.post(EVENTS, {"reference": "R-1"})

    assert response.status_code == 415


@override_settings(CRM_API_MAX_REQUEST_BYTES=100)
def test_body_over_size_limit_is_413(lei, till):
    response = till.post(EVENTS, event(), format="json")

    assert response.status_code == 413
    body = response.json()
    assert body["error"] == "request_too_large"
    assert "limit of 100 bytes" in body["detail"]
    assert not Activity.objects.filter(member=lei, amount=1).exists()


def test_events_without_rules_stored_unevaluated(store, till):
    member = make_member(store, "C-1001")

    response = till.post(EVENTS, event(), format="json")

    assert response.status_code == 201
    body = response.json()
    assert body["tiers_evaluated"] is False
    assert body["tier_before"] is None
    assert body["tier_after"] is None
    assert body["promoted"] is False
    assert Activity.objects.filter(member=member).count() == 1


# Refunds


def test_purchase_and_refund_in_one_batch_promote_nobody(lei, till, ladder):
    batch = {
        "events": [
            event(
                reference="P-1", amount="300", occurred_at=minutes_ago(6).isoformat()
            ),
            event(
                reference="P-1-R",
                kind="refund",
                amount="300",
                occurred_at=minutes_ago(2).isoformat(),
            ),
        ]
    }

    response = till.post(BATCH, batch, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["counts"]["created"] == 2
    assert body["promoted"] == 0
    for result in body["events"]:
        assert result["tier_before"] == "Bronze"
        assert result["tier_after"] == "Bronze"
        assert result["promoted"] is False
    lei.refresh_from_db()
    assert lei.tier == ladder["bronze"]
    assert promotions(lei) == 0


def test_refund_in_later_request_nets_to_zero(ladder, store, till):
    member = placed_member(store, "C-1001", "600")

    purchase = till.post(
        EVENTS,
        event(reference="P-1", amount="300", occurred_at=minutes_ago(6).isoformat()),
        format="json",
    )
    refund = till.post(
        EVENTS,
        event(
            reference="P-1-R",
            kind="refund",
            amount="300",
            occurred_at=minutes_ago(2).isoformat(),
        ),
        format="json",
    )
    # ¥800 with the refunded purchase netted out; ¥1,100 if it still counted.
    later = till.post(
        EVENTS,
        event(reference="P-2", amount="200", occurred_at=minutes_ago(1).isoformat()),
        format="json",
    )

    for response in (purchase, refund, later):
        assert response.status_code == 201
        assert response.json()["promoted"] is False
        assert response.json()["tier_after"] == "Bronze"
    assert promotions(member) == 0
    member.refresh_from_db()
    assert member.tier == ladder["bronze"]


# Batches


def test_batch_all_created_is_200(lei, till, ladder):
    batch = {"events": [event(reference=f"B-{n}", amount="0.50") for n in range(4)]}

    response = till.post(BATCH, batch, format="json")

    assert response.status_code == 200
    body = response.json()
    assert body["channel"] == "store-xuhui"
    assert body["counts"] == {"created": 4, "duplicate": 0, "conflict": 0, "invalid": 0}
    assert body["promoted"] == 1
    assert [result["index"] for result in body["events"]] == [0, 1, 2, 3]
    assert all(result["promoted"] for result in body["events"])
    assert promotions(lei) == 1


def test_batch_mixed_statuses_is_207(lei, ladder, store, till):
    placed_member(store, "C-2002", "0")
    till.post(EVENTS, event(reference="OLD-1", amount="5"), format="json")
    batch = {
        "events": [
            event(reference="N-1", amount="2"),
            event(reference="N-1", amount="2"),
            event(reference="N-1", amount="3"),
            event(reference="OLD-1", amount="5"),
            event(reference="OLD-1", amount="6"),
            event(reference="N-2", amount="oops"),
            event(reference="N-3", external_id="C-404"),
            event(reference="N-4", external_id="C-2002", amount="7"),
            "not an object either",
        ]
    }

    response = till.post(BATCH, batch, format="json")

    # A non-object item makes the envelope invalid: nothing is recorded.
    assert response.status_code == 400
    assert "events" in response.json()["fields"]
    assert not Activity.objects.filter(reference__startswith="N-").exists()

    batch["events"].pop()
    response = till.post(BATCH, batch, format="json")

    assert response.status_code == 207
    body = response.json()
    statuses = [result["status"] for result in body["events"]]
    assert statuses == [
        "created",
        "duplicate",
        "conflict",
        "duplicate",
        "conflict",
        "invalid",
        "invalid",
        "created",
    ]
    assert body["counts"] == {"created": 2, "duplicate": 2, "conflict": 2, "invalid": 2}
    assert "event 0" in body["events"][2]["detail"]
    assert "amount" in body["events"][5]["errors"]
    assert "external_id" in body["events"][6]["errors"]
    assert body["events"][6]["member"] is None
    assert body["events"][7]["tier_after"] == "Bronze"
    assert Activity.objects.get(reference="N-1").amount == Decimal("2.00")
    assert Activity.objects.get(reference="OLD-1").amount == Decimal("5.00")
    assert not Activity.objects.filter(reference__in=["N-2", "N-3"]).exists()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"events": []}, "at least one event"),
        ({"events": "R-1"}, "list"),
        ({}, "required"),
        ([event()], "dictionary"),
    ],
)
def test_batch_envelope_invalid_is_400(lei, till, body, message):
    response = till.post(BATCH, body, format="json")

    assert response.status_code == 400
    assert response.json()["error"] == "invalid"
    assert message in json.dumps(response.json()["fields"])


@override_settings(CRM_API_MAX_BATCH=3)
def test_batch_over_limit_is_400(lei, till):
    batch = {"events": [event(reference=f"B-{n}") for n in range(4)]}

    response = till.post(BATCH, batch, format="json")

    assert response.status_code == 400
    assert "at most 3 events" in response.json()["fields"]["events"][0]
    assert not Activity.objects.filter(reference__startswith="B-").exists()


def test_batch_of_max_size_costs_fixed_queries(
    lei, till, django_assert_max_num_queries
):
    batch = {
        "events": [
            event(
                reference=f"M-{n:04}",
                amount="0.01",
                occurred_at=minutes_ago(n % 60).isoformat(),
            )
            for n in range(1000)
        ]
    }

    # 36 on SQLite: the token and its first-use UPDATE, the kinds, the
    # erasure tombstones, the members, the stored references (two chunks of
    # 900), ten INSERTs of up to 111 rows, the evaluation of the one member,
    # the tiers after it and the savepoints. Only the INSERTs and chunks grow
    # with the batch size.
    with django_assert_max_num_queries(36):
        response = till.post(BATCH, batch, format="json")

    assert response.status_code == 200
    assert response.json()["counts"]["created"] == 1000
    assert Activity.objects.filter(reference__startswith="M-").count() == 1000
    assert response.json()["promoted"] == 1


# Idempotency-Key


def test_idempotency_key_replays_stored_response(lei, till):
    first = till.post(EVENTS, event(), format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = till.post(EVENTS, event(), format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.status_code == 201
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert not first.has_header("Idempotent-Replayed")
    assert again.json()["promoted"] is True
    assert Activity.objects.filter(reference="R-1").count() == 1
    assert IdempotencyRecord.objects.count() == 1


def test_idempotency_key_with_other_body_is_409(lei, till):
    till.post(EVENTS, event(), format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    response = till.post(
        EVENTS, event(reference="R-2"), format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )

    assert response.status_code == 409
    assert response.json()["error"] == "idempotency_key_reused"
    assert not Activity.objects.filter(reference="R-2").exists()


def test_idempotency_key_same_json_reordered_replays(lei, till):
    body = event()
    reordered = dict(reversed(list(body.items())))

    till.post(EVENTS, body, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = till.post(EVENTS, reordered, format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"


def test_idempotency_key_per_endpoint_body(lei, till):
    till.post(EVENTS, event(), format="json", HTTP_IDEMPOTENCY_KEY="k-1")

    response = till.post(
        BATCH, {"events": [event()]}, format="json", HTTP_IDEMPOTENCY_KEY="k-1"
    )

    assert response.status_code == 409


def test_idempotency_key_scoped_to_channel(lei, tmall, tmall_token, till):
    ChannelIdentity.objects.create(member=lei, channel=tmall, external_id="C-1001")

    store_response = till.post(EVENTS, event(), format="json", HTTP_IDEMPOTENCY_KEY="k")
    tmall_response = api_client(tmall_token).post(
        EVENTS, event(amount="3"), format="json", HTTP_IDEMPOTENCY_KEY="k"
    )

    assert store_response.status_code == 201
    assert tmall_response.status_code == 201
    assert not tmall_response.has_header("Idempotent-Replayed")
    assert IdempotencyRecord.objects.count() == 2


def test_idempotency_key_replays_batch_207(lei, till):
    batch = {"events": [event(), event(reference="R-2", amount="bad")]}

    first = till.post(BATCH, batch, format="json", HTTP_IDEMPOTENCY_KEY="b-1")
    again = till.post(BATCH, batch, format="json", HTTP_IDEMPOTENCY_KEY="b-1")

    assert first.status_code == 207
    assert again.status_code == 207
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "ключ"])
def test_invalid_idempotency_key_is_400(lei, till, key):
    response = till.post(
        EVENTS,
        event(),
        format="json",
        HTTP_IDEMPOTENCY_KEY=key.encode().decode("latin-1"),
    )

    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["fields"]
    assert not Activity.objects.filter(reference="R-1").exists()


# Member tier endpoint


def test_member_tier_read(lei, till):
    till.post(EVENTS, event(amount="1"), format="json")

    response = till.get(member_url(lei))

    assert response.status_code == 200
    body = response.json()
    assert body["member"] == str(lei.public_id)
    assert body["tier"]["name"] == "Silver"
    assert body["tier"]["colour"] == "#9ea7ad"
    assert body["progress"]["next_tier"]["name"] == "Gold"
    requirements = body["progress"]["next_tier"]["requirements"]
    assert {r["metric"] for r in requirements} == {"net_spend", "orders"}
    spend = next(r for r in requirements if r["metric"] == "net_spend")
    assert Decimal(spend["value"]) == Decimal("1000")
    assert Decimal(spend["target"]) == Decimal("5000")
    assert spend["met"] is False
    text = response.content.decode()
    for private in ("Li Lei", "13800138000", "lilei@example.com", "C-1001"):
        assert private not in text


def test_member_tier_texts_follow_accept_language(lei, store_token):
    client = api_client(store_token)

    english = client.get(member_url(lei), HTTP_ACCEPT_LANGUAGE="en").json()
    chinese = client.get(member_url(lei), HTTP_ACCEPT_LANGUAGE="zh-hans").json()

    english_text = english["progress"]["next_tier"]["rule_text"]
    chinese_text = chinese["progress"]["next_tier"]["rule_text"]
    assert "Silver" in english_text
    assert english_text != chinese_text


def test_member_of_other_channel_is_404(ladder, tmall, till):
    member = placed_member(tmall, "TM-1", "0")

    response = till.get(member_url(member))

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_unknown_member_is_404(lei, till):
    response = till.get(f"/api/v1/members/{uuid.uuid4()}/")

    assert response.status_code == 404


def test_member_tier_without_rules(store, till):
    member = make_member(store, "C-1")

    response = till.get(member_url(member))

    assert response.status_code == 200
    assert response.json()["tier"] is None
    assert response.json()["progress"] is None


def test_member_tier_read_queries(lei, till, django_assert_max_num_queries):
    # The token and its first-use UPDATE, the member with its tier, and
    # member_progress(): the rule version (six queries), the metrics
    # aggregate and the member's overrides.
    with django_assert_max_num_queries(11):
        response = till.get(member_url(lei))

    assert response.status_code == 200


# Token command and admin


def test_create_channel_token_prints_token_once(lei):
    stdout, stderr = StringIO(), StringIO()

    call_command(
        "create_channel_token",
        "STORE-XUHUI",
        name="Till 3",
        stdout=stdout,
        stderr=stderr,
    )

    token = stdout.getvalue().strip()
    row = ChannelToken.objects.get(name="Till 3")
    assert row.channel.code == "store-xuhui"
    assert row.prefix in stderr.getvalue()
    assert token not in stderr.getvalue()
    assert api_client(token).post(EVENTS, event(), format="json").status_code == 201


def test_create_channel_token_unknown_channel(db):
    with pytest.raises(CommandError, match="Channel 'nowhere' not found"):
        call_command("create_channel_token", "nowhere", name="x", stdout=StringIO())


def test_admin_lists_and_revokes_tokens(
    store, tmall, store_token, tmall_token, client, django_assert_max_num_queries
):
    user = User.objects.create_superuser("admin", "admin@example.com", "pw-for-tests")
    client.force_login(user)
    url = reverse("admin:members_channeltoken_changelist")

    # Session, user, the paginator's count, the tokens joined to their
    # channels, and the channel filter's choices.
    with django_assert_max_num_queries(8):
        page = client.get(url)
    assert page.status_code == 200
    assert reverse("admin:members_channeltoken_add") not in page.content.decode()

    row = ChannelToken.objects.get(channel=store)
    client.post(url, {"action": "revoke", "_selected_action": [row.pk]})

    row.refresh_from_db()
    assert row.revoked_at is not None
    assert ChannelToken.objects.get(channel=tmall).revoked_at is None
    response = api_client(store_token).post(EVENTS, event(), format="json")
    assert response.status_code == 401


# Logging, schema and docs


def test_logs_hold_ids_not_personal_data(lei, till, store_token, caplog):
    caplog.set_level(logging.INFO)

    till.post(BATCH, {"events": [event(), event(reference="R-2")]}, format="json")
    till.get(member_url(lei))

    messages = "\n".join(record.getMessage() for record in caplog.records)
    assert f"channel_id={lei.identities.get().channel_id}" in messages
    assert f"member_ids={lei.pk}" in messages
    assert "created=2" in messages
    for secret in (store_token, "Li Lei", "13800138000", "lilei@example.com"):
        assert secret not in messages


def test_schema_is_valid_openapi(db):
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    schema = json.loads(response.content)
    validate_schema(schema)
    assert {"/api/v1/events/", "/api/v1/events/batch/"} <= set(schema["paths"])
    assert "/api/v1/members/{public_id}/" in schema["paths"]
    security = schema["components"]["securitySchemes"]["channelToken"]
    assert security == {
        "type": "http",
        "scheme": "bearer",
        "description": security["description"],
    }


def test_docs_page_served_without_cdn(db):
    response = APIClient().get("/api/docs/")

    assert response.status_code == 200
    html = response.content.decode()
    assert "/api/schema/" in html
    assert "cdn.jsdelivr.net" not in html


# Events dated ahead of now


def test_event_ahead_of_now_promotes_when_due(lei, till, ladder):
    ahead = timezone.now() + dt.timedelta(minutes=5)

    body = till.post(EVENTS, event(occurred_at=ahead.isoformat()), format="json").json()

    # The evaluation in the request counts activity up to now only.
    assert body["status"] == "created"
    assert body["promoted"] is False
    schedule = Schedule.objects.get(func="tiers.jobs.evaluate_members")
    assert schedule.next_run > ahead
    assert schedule.schedule_type == Schedule.ONCE

    # The task as the cluster runs it, at the moment it is scheduled for.
    evaluate_members(ast.literal_eval(schedule.args), as_of=schedule.next_run)

    lei.refresh_from_db()
    assert lei.tier == ladder["silver"]
    assert promotions(lei) == 1


def test_event_in_the_past_schedules_nothing(lei, till):
    till.post(EVENTS, event(), format="json")

    assert not Schedule.objects.filter(func="tiers.jobs.evaluate_members").exists()


def test_amount_above_limit_invalid(lei, till):
    response = till.post(EVENTS, event(amount="1000000.01"), format="json")

    assert response.status_code == 422
    assert "CRM_MAX_ACTIVITY_AMOUNT" in json.dumps(response.json())
    assert not Activity.objects.filter(reference="R-1").exists()
