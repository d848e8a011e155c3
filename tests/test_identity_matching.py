"""Linking a channel's new ids to existing members by phone or e-mail.

Personas: Li Lei is a member of the Xuhui store with phone 138 0013 8000
and e-mail LiLei@Example.com. Tmall sends ids it has not sent before, and
staff let Tmall match new ids by phone and by e-mail. The WeChat channel
matches nothing.
"""

from __future__ import annotations

import datetime as dt
import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone, translation
from rest_framework.test import APIClient

from members.api_auth import issue_token
from members.identity import EMAIL as BY_EMAIL
from members.identity import PHONE as BY_PHONE
from members.identity import ContactRecord, match_contacts, match_members
from members.importing.batches import rollback_batch
from members.importing.service import import_file
from members.merging import merge_members
from members.models import (
    Activity,
    Channel,
    ChannelIdentity,
    ImportBatch,
    ImportedMember,
    Member,
)
from tests.conftest import make_member

PHONE = "+8613800138000"
EMAIL = "LiLei@Example.com"
EVENTS = "/api/v1/events/"
BATCH = "/api/v1/events/batch/"


@pytest.fixture(autouse=True)
def english():
    with translation.override("en"):
        yield


@pytest.fixture
def tmall(db) -> Channel:
    return Channel.objects.create(
        code="tmall",
        name="Tmall",
        kind="ecommerce",
        match_phone=True,
        match_email=True,
    )


@pytest.fixture
def wechat(db) -> Channel:
    return Channel.objects.create(code="wechat", name="WeChat", kind="social")


@pytest.fixture
def lei(store) -> Member:
    member = make_member(store, "C-1001", name="Li Lei")
    member.phone = "138 0013 8000"
    member.phone_e164 = PHONE
    member.email = EMAIL
    member.save()
    return member


def twin(store, external_id: str, **fields) -> Member:
    """Another member of the store, sharing some of Li Lei's contact data."""
    member = make_member(store, external_id, name="Someone else")
    Member.objects.filter(pk=member.pk).update(**fields)
    member.refresh_from_db()
    return member


# The matching service


def test_phone_matches_one_member(tmall, lei):
    matches = match_members(tmall, [ContactRecord("T-1", phone_e164=PHONE)])

    assert matches == {"T-1": lei.pk}


def test_email_matches_without_case(tmall, lei):
    matches = match_members(tmall, [ContactRecord("T-1", email=" lilei@EXAMPLE.com ")])

    assert matches == {"T-1": lei.pk}


def test_two_members_with_phone_not_matched(tmall, lei, store):
    twin(store, "C-2", phone_e164=PHONE)

    assert match_members(tmall, [ContactRecord("T-1", phone_e164=PHONE)]) == {}


def test_phone_and_email_of_different_members(tmall, lei, store):
    other = twin(store, "C-2", email="other@example.com")
    record = ContactRecord("T-1", phone_e164=PHONE, email=other.email)

    assert match_members(tmall, [record]) == {}


def test_phone_and_email_of_one_member(tmall, lei):
    record = ContactRecord("T-1", phone_e164=PHONE, email=EMAIL)

    assert match_members(tmall, [record]) == {"T-1": lei.pk}


def test_match_names_contact_data_used(tmall, lei):
    records = [
        ContactRecord("T-1", phone_e164=PHONE),
        ContactRecord("T-2", email=EMAIL.upper()),
        ContactRecord("T-3", phone_e164=PHONE, email=EMAIL),
    ]

    matches = match_contacts(tmall, records)

    assert matches["T-1"].matched_by == (BY_PHONE,)
    assert matches["T-2"].matched_by == (BY_EMAIL,)
    assert matches["T-3"].matched_by == (BY_PHONE, BY_EMAIL)
    assert {match.member_id for match in matches.values()} == {lei.pk}


def test_channel_flags_choose_fields(tmall, lei):
    Channel.objects.filter(pk=tmall.pk).update(match_email=False)
    tmall.refresh_from_db()

    by_email = match_members(tmall, [ContactRecord("T-1", email=EMAIL)])
    by_phone = match_members(tmall, [ContactRecord("T-2", phone_e164=PHONE)])

    assert by_email == {}
    assert by_phone == {"T-2": lei.pk}


def test_channel_without_matching(wechat, lei):
    record = ContactRecord("W-1", phone_e164=PHONE, email=EMAIL)

    with CaptureQueriesContext(connection) as queries:
        matches = match_members(wechat, [record])

    assert matches == {}
    assert len(queries) == 0


def test_merged_member_not_matched(tmall, lei, store, django_user_model):
    staff = django_user_model.objects.create_user("staff")
    old = twin(store, "C-2", phone_e164=PHONE)
    merge_members(old, lei, user=staff, reason="same phone")

    matches = match_members(tmall, [ContactRecord("T-1", phone_e164=PHONE)])

    assert matches == {"T-1": lei.pk}


def test_query_count_independent_of_rows(tmall, store):
    for number in range(30):
        twin(store, f"C-{number}", phone_e164=f"+86138001380{number:02d}")
    records = [
        ContactRecord(f"T-{n}", phone_e164=f"+86138001380{n:02d}", email=f"{n}@x.cn")
        for n in range(30)
    ]

    with CaptureQueriesContext(connection) as queries:
        matches = match_members(tmall, records)

    assert len(matches) == 30
    # One query for the phones and one for the e-mails.
    assert len(queries) == 2


# Member import


def import_members(text: str):
    return import_file(text.encode(), "members", file_name="members.csv")


def test_import_links_matched_row(tmall, lei):
    report = import_members(
        "external_id,name,phone,email,channel,joined_at\n"
        "T-77,Li Lei (Tmall),13800138000,,tmall,2023-01-05\n"
    )

    assert report.refused is None
    assert Member.objects.count() == 1
    identity = ChannelIdentity.objects.get(channel=tmall, external_id="T-77")
    assert identity.member == lei
    assert lei.pk in report.member_ids


def test_linked_row_keeps_member_profile(tmall, lei):
    Member.objects.filter(pk=lei.pk).update(joined_on=dt.date(2023, 5, 1))

    import_members(
        "external_id,name,phone,email,channel,joined_at\n"
        "T-77,Li Lei (Tmall),013800138000,LILEI@example.COM,tmall,2024-01-01\n"
    )

    lei.refresh_from_db()
    assert lei.name == "Li Lei"
    assert lei.phone == "138 0013 8000"
    assert lei.phone_e164 == PHONE
    assert lei.email == EMAIL
    assert lei.joined_on == dt.date(2023, 5, 1)


def test_linked_row_fills_empty_fields(tmall, lei):
    Member.objects.filter(pk=lei.pk).update(name="", email="", joined_on=None)

    import_members(
        "external_id,name,phone,email,channel,joined_at\n"
        "T-77,Li Lei (Tmall),13800138000,lei@tmall.example,tmall,2024-01-01\n"
    )

    lei.refresh_from_db()
    assert lei.name == "Li Lei (Tmall)"
    assert lei.email == "lei@tmall.example"
    assert lei.phone == "138 0013 8000"
    assert lei.joined_on == dt.date(2024, 1, 1)


def test_linked_row_keeps_earlier_join_date(tmall, lei):
    Member.objects.filter(pk=lei.pk).update(joined_on=dt.date(2023, 5, 1))

    import_members(
        "external_id,name,phone,email,channel,joined_at\n"
        "T-77,Li Lei,13800138000,,tmall,2022-02-02\n"
    )

    lei.refresh_from_db()
    assert lei.joined_on == dt.date(2022, 2, 2)


def test_linked_line_says_how_it_matched(tmall, lei):
    report = import_members(
        "external_id,name,phone,email,channel,joined_at\n"
        "T-77,Li Lei (Tmall),13800138000,,tmall,\n"
        "T-78,,,lilei@example.com,tmall,\n"
    )

    lines = {line.line: line.values for line in report.lines}
    assert lines[2]["match"] == (
        "linked to an existing member by phone; kept the member's name"
    )
    assert lines[3]["match"] == "linked to an existing member by e-mail"


def test_known_id_still_updates_member(tmall, lei):
    ChannelIdentity.objects.create(member=lei, channel=tmall, external_id="T-77")

    report = import_members(
        "external_id,name,phone,email,channel,joined_at\n"
        "T-77,Li Lei (Tmall),13800138001,,tmall,2024-01-01\n"
    )

    lei.refresh_from_db()
    assert lei.name == "Li Lei (Tmall)"
    assert lei.phone_e164 == "+8613800138001"
    assert lei.joined_on == dt.date(2024, 1, 1)
    assert "match" not in report.lines[0].values


def test_linked_row_rollback_restores_fills(tmall, lei, django_user_model):
    Member.objects.filter(pk=lei.pk).update(email="", joined_on=dt.date(2023, 5, 1))
    staff = django_user_model.objects.create_user("staff", is_staff=True)

    report = import_members(
        "external_id,name,phone,email,channel,joined_at\n"
        "T-77,Li Lei (Tmall),13800138000,lei@tmall.example,tmall,2022-02-02\n"
    )

    batch = ImportBatch.objects.get(pk=report.batch_id)
    imported = ImportedMember.objects.get(batch=batch, member=lei)
    assert imported.previous == {
        "email": ["", "lei@tmall.example"],
        "joined_on": ["2023-05-01", "2022-02-02"],
    }
    rollback_batch(batch, staff)
    lei.refresh_from_db()
    assert lei.email == ""
    assert lei.joined_on == dt.date(2023, 5, 1)
    assert lei.name == "Li Lei"
    assert not ChannelIdentity.objects.filter(external_id="T-77").exists()


def test_import_creates_member_when_ambiguous(tmall, lei, store):
    twin(store, "C-2", phone_e164=PHONE)

    import_members(
        "external_id,name,phone,email,channel,joined_at\n"
        "T-77,Li Lei (Tmall),13800138000,,tmall,2023-01-05\n"
    )

    identity = ChannelIdentity.objects.get(channel=tmall, external_id="T-77")
    assert identity.member != lei
    assert Member.objects.count() == 3


def test_import_ignores_contacts_without_matching(wechat, lei):
    import_members(
        "external_id,name,phone,email,channel,joined_at\n"
        "W-5,Li Lei,13800138000,lilei@example.com,wechat,2023-01-05\n"
    )

    identity = ChannelIdentity.objects.get(channel=wechat, external_id="W-5")
    assert identity.member != lei


# Event API


@pytest.fixture
def tmall_client(tmall) -> APIClient:
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_token(tmall, 'shop')[1]}")
    return client


def event(**values: object) -> dict[str, object]:
    return {
        "external_id": "T-77",
        "reference": "O-1",
        "occurred_at": (timezone.now() - dt.timedelta(minutes=5)).isoformat(),
        "amount": "120.00",
        "kind": "purchase",
        **values,
    }


def test_event_links_id_by_email(ladder, tmall_client, tmall, lei):
    response = tmall_client.post(
        EVENTS, event(email="lilei@example.com"), format="json"
    )

    assert response.status_code == 201, response.json()
    assert response.json()["member"] == str(lei.public_id)
    identity = ChannelIdentity.objects.get(channel=tmall, external_id="T-77")
    assert identity.member == lei
    assert Activity.objects.get(reference="O-1").member == lei


def test_event_links_id_by_phone(ladder, tmall_client, tmall, lei):
    response = tmall_client.post(EVENTS, event(phone="138-0013-8000"), format="json")

    assert response.status_code == 201, response.json()
    assert ChannelIdentity.objects.get(channel=tmall, external_id="T-77").member == lei


def test_event_without_contact_rejected(ladder, tmall_client, lei):
    response = tmall_client.post(EVENTS, event(), format="json")

    assert response.status_code == 422
    message = response.json()["errors"]["external_id"][0]
    assert message.startswith("No member has id 'T-77' in channel tmall. Add")
    assert not ChannelIdentity.objects.filter(external_id="T-77").exists()


def test_event_with_ambiguous_phone_rejected(ladder, tmall_client, lei, store):
    twin(store, "C-2", phone_e164=PHONE)

    response = tmall_client.post(EVENTS, event(phone="13800138000"), format="json")

    assert response.status_code == 422
    message = response.json()["errors"]["external_id"][0]
    assert "matches no member or more than one" in message
    assert "13800138000" not in str(response.json())
    assert not Activity.objects.exists()


def test_event_not_matched_without_channel_setting(ladder, wechat, lei):
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {issue_token(wechat, 'app')[1]}")

    response = client.post(EVENTS, event(email=EMAIL), format="json")

    assert response.status_code == 422
    assert not ChannelIdentity.objects.filter(external_id="T-77").exists()


def test_event_contact_ignored_for_known_id(ladder, tmall_client, tmall, lei, store):
    other = twin(store, "C-2")
    ChannelIdentity.objects.create(member=other, channel=tmall, external_id="T-77")

    response = tmall_client.post(EVENTS, event(email=EMAIL), format="json")

    assert response.status_code == 201
    assert Activity.objects.get(reference="O-1").member == other


def test_batch_links_id_once(ladder, tmall_client, tmall, lei):
    body = {
        "events": [
            event(reference="O-1", email=EMAIL),
            event(reference="O-2", email=EMAIL, amount="5.00"),
            event(reference="O-3", external_id="T-88"),
        ]
    }

    response = tmall_client.post(BATCH, body, format="json")

    assert response.status_code == 207
    statuses = [result["status"] for result in response.json()["events"]]
    assert statuses == ["created", "created", "invalid"]
    assert ChannelIdentity.objects.filter(channel=tmall, member=lei).count() == 1
    assert Activity.objects.filter(member=lei).count() == 2


def test_invalid_email_rejected_without_echo(ladder, tmall_client, lei):
    response = tmall_client.post(EVENTS, event(email="lilei-at-example"), format="json")

    assert response.status_code == 422
    errors = response.json()["errors"]
    assert errors["email"] == [
        "Enter a valid e-mail address, such as name@example.com."
    ]
    assert "lilei-at-example" not in str(response.json())


def test_invalid_phone_matches_nobody(ladder, tmall_client, lei):
    response = tmall_client.post(EVENTS, event(phone="12"), format="json")

    assert response.status_code == 422
    assert "external_id" in response.json()["errors"]


def test_contact_data_not_logged(ladder, tmall_client, lei, caplog):
    with caplog.at_level(logging.DEBUG):
        response = tmall_client.post(
            EVENTS, event(email=EMAIL, phone="13800138000"), format="json"
        )

    assert response.status_code == 201
    assert "event API linked new ids by contact data" in caplog.text
    for secret in ("13800138000", PHONE, EMAIL.lower(), EMAIL):
        assert secret not in caplog.text


def test_schema_documents_contact_fields(client, db):
    response = client.get("/api/schema/", {"format": "json"}, HTTP_ACCEPT_LANGUAGE="en")

    event_schema = response.json()["components"]["schemas"]["Event"]["properties"]
    assert "phone" in event_schema
    assert "email" in event_schema
    assert "linked" in event_schema["email"]["description"]
