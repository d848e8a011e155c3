"""The activity writer's insert: COPY into a staging table on PostgreSQL,
bulk_create elsewhere, with the same rows and report either way."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import IntegrityError, connection
from django.test.utils import CaptureQueriesContext

from members.importing import activity_writer
from members.importing.activity_writer import STAGING_TABLE, save_activities
from members.importing.batches import rollback_batch, start_batch
from members.importing.cleaning import ActivityRecord
from members.importing.report import ImportReport, Status
from members.importing.service import import_file
from members.models import Activity, ActivityKind, ImportBatch
from tests.conftest import CASES, local

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="COPY runs on PostgreSQL only"
)
on_sqlite = pytest.mark.skipif(
    connection.vendor != "sqlite", reason="bulk_create runs on SQLite"
)


@pytest.fixture
def base(db) -> None:
    import_file(CASES / "base_members.csv", "members")


def purchase(line: int, reference: str, amount: str = "10.00") -> ActivityRecord:
    return ActivityRecord(
        line=line,
        channel="store-xuhui",
        external_id="M0001",
        occurred_at=local(2024, 5, 1, 10, 0),
        amount=Decimal(amount),
        kind=ActivityKind.objects.get(code="purchase"),
        reference=reference,
    )


def new_report() -> ImportReport:
    return ImportReport(kind="activities", file_name="copy.csv", dry_run=False)


def new_batch() -> ImportBatch:
    return start_batch("activities", file_name="copy.csv", data_or_size=100, user=None)


def test_writer_stores_every_column(base):
    batch = new_batch()
    report = new_report()

    save_activities([purchase(4, "C-1", "12.34")], report, batch)

    activity = Activity.objects.get(reference="C-1")
    assert activity.amount == Decimal("12.34")
    assert activity.occurred_at == local(2024, 5, 1, 10, 0)
    assert activity.quantity == 1
    assert activity.growth_points == 0
    assert activity.source == Activity.Source.IMPORT
    assert activity.import_batch == batch
    assert activity.import_line == 4
    assert activity.recorded_at is not None
    assert activity.member.identities.filter(external_id="M0001").exists()
    assert report.created == 1
    assert report.member_ids == {activity.member_id}


def test_writer_chunks_share_one_transaction(base):
    batch = new_batch()
    first, second = new_report(), new_report()

    save_activities([purchase(2, "A-1"), purchase(3, "A-2")], first, batch)
    save_activities([purchase(7, "B-1")], second, batch)

    lines = dict(
        Activity.objects.filter(import_batch=batch).values_list(
            "reference", "import_line"
        )
    )
    assert lines == {"A-1": 2, "A-2": 3, "B-1": 7}
    assert first.created == 2
    assert second.created == 1


def activity_inserts(queries: CaptureQueriesContext) -> list[str]:
    table = Activity._meta.db_table
    return [
        query["sql"] for query in queries if f'INSERT INTO "{table}"' in query["sql"]
    ]


@on_postgresql
def test_writer_uses_copy_staging(base):
    batch = new_batch()

    with CaptureQueriesContext(connection) as queries:
        save_activities([purchase(2, "S-1")], new_report(), batch)

    (insert,) = activity_inserts(queries)
    assert f'DELETE FROM "{STAGING_TABLE}"' in insert  # noqa: S608
    assert "ON CONFLICT" in insert


@on_sqlite
def test_writer_uses_bulk_create(base):
    batch = new_batch()

    with CaptureQueriesContext(connection) as queries:
        save_activities([purchase(2, "S-1")], new_report(), batch)

    (insert,) = activity_inserts(queries)
    assert STAGING_TABLE not in insert
    assert "VALUES" in insert


@pytest.fixture
def race(base, monkeypatch) -> ImportBatch:
    """A reference saved by another import after the writer read the ledger."""
    other = new_batch()
    save_activities([purchase(2, "R-1")], new_report(), other)
    # The writer reads the ledger before it inserts. Hiding the saved row from
    # that read gives the same state as a commit between the read and the
    # insert.
    monkeypatch.setattr(activity_writer, "_known_references", lambda *args: {})
    return other


@on_postgresql
def test_concurrent_reference_reported_already_imported(race):
    batch = new_batch()
    report = new_report()

    save_activities([purchase(5, "R-1"), purchase(6, "R-2")], report, batch)

    (issue,) = report.skipped
    assert issue.status == Status.ALREADY_IMPORTED
    assert issue.line == 5
    assert report.created == 1
    statuses = {outcome.line: outcome.status for outcome in report.lines}
    assert statuses == {5: Status.ALREADY_IMPORTED, 6: Status.CREATED}
    assert Activity.objects.get(reference="R-1").import_batch == race
    assert Activity.objects.get(reference="R-2").import_batch == batch


@on_sqlite
def test_concurrent_reference_raises_on_sqlite(race):
    with pytest.raises(IntegrityError):
        save_activities([purchase(5, "R-1")], new_report(), new_batch())


def test_rollback_removes_copied_rows(base):
    data = (
        b"external_id,occurred_at,amount,channel,kind,reference\n"
        b"M0001,2024-05-01 10:00,20.00,store-xuhui,purchase,RB-1\n"
        b"M0001,2024-05-02 10:00,30.00,store-xuhui,purchase,RB-2\n"
    )
    other_import = import_file(
        data.replace(b"RB-", b"KEEP-"), "activities", file_name="keep.csv"
    )
    report = import_file(data, "activities", file_name="rollback.csv")
    assert report.created == 2

    rollback_batch(ImportBatch.objects.get(pk=report.batch_id), user=None)

    assert not Activity.objects.filter(reference__startswith="RB-").exists()
    assert Activity.objects.filter(import_batch_id=other_import.batch_id).count() == 2
