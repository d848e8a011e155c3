"""Import batches: what a confirmed import records, and its error report."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import translation

from members.importing.activity_writer import save_activities
from members.importing.batches import (
    ISSUE_VALUE_MAX_LENGTH,
    add_chunk,
    finish_batch,
    start_batch,
)
from members.importing.cleaning import ActivityRecord, MemberRecord
from members.importing.member_writer import save_members
from members.importing.report import ImportReport, Status
from members.importing.service import import_file
from members.importing.text import MAX_SHOWN_CHARS
from members.models import (
    Activity,
    ActivityKind,
    Channel,
    ChannelIdentity,
    ImportBatch,
    ImportedMember,
    ImportIssue,
    Member,
)
from tests.conftest import CASES, local


@pytest.fixture(autouse=True)
def english(client):
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    with translation.override("en"):
        yield


@pytest.fixture
def base(db) -> None:
    import_file(CASES / "base_members.csv", "members")


@pytest.fixture
def importer(db) -> User:
    """A staff user who may import, and do nothing else."""
    user = User.objects.create_user("importer", "i@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="import"))
    return user


@pytest.fixture
def importer_client(client, importer):
    client.force_login(importer)
    return client


@pytest.fixture
def viewer_client(client, db):
    """A staff user who may view members but not import."""
    user = User.objects.create_user("viewer", "v@example.com", "pw", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_member"))
    client.force_login(user)
    return client


def activity_record(line: int, reference: str, external_id: str = "M0001"):
    return ActivityRecord(
        line=line,
        channel="store-xuhui",
        external_id=external_id,
        occurred_at=local(2024, 5, 1, 10, 0),
        amount=Decimal("10.00"),
        kind=ActivityKind.objects.get(code="purchase"),
        reference=reference,
    )


def new_report(kind: str = "activities") -> ImportReport:
    return ImportReport(kind=kind, file_name="chunked.csv", dry_run=False)


def running_batch(kind: str = "activities") -> ImportBatch:
    return start_batch(kind, file_name="chunked.csv", data_or_size=100, user=None)


# What a confirmed import records


def test_confirmed_import_recorded_as_applied_batch(base, importer):
    data = (CASES / "c17_transactions_bad_amount_row.csv").read_bytes()

    report = import_file(
        data, "activities", file_name="c17.csv", user=importer, date_order="day_first"
    )

    batch = ImportBatch.objects.get(pk=report.batch_id)
    assert batch.status == ImportBatch.Status.APPLIED
    assert batch.kind == "activities"
    assert batch.file_name == "c17.csv"
    assert batch.file_size == len(data)
    assert batch.file_sha256 == hashlib.sha256(data).hexdigest()
    assert batch.created_by == importer
    assert batch.options == {"date_order": "day_first", "file_format": "csv"}
    assert batch.started_at is not None
    assert batch.finished_at >= batch.started_at
    assert (batch.total_rows, batch.processed_rows) == (4, 4)
    assert (batch.created_count, batch.rejected_count) == (3, 1)


def test_batch_counts_skipped_lines(base):
    import_file(CASES / "c20_transactions_duplicates.csv", "activities")

    report = import_file(CASES / "c20_transactions_duplicates.csv", "activities")

    batch = ImportBatch.objects.get(pk=report.batch_id)
    assert batch.already_imported_count == 5
    assert batch.duplicate_count == 0
    assert batch.created_count == 0
    statuses = list(batch.issues.values_list("status", flat=True))
    assert statuses == ["already imported"] * 5


def test_batch_stores_duplicate_issue(base):
    report = import_file(CASES / "c20_transactions_duplicates.csv", "activities")

    issue = ImportIssue.objects.get(batch_id=report.batch_id)
    assert (issue.line, issue.column, issue.value) == (5, "reference", "TM-88001")
    assert issue.status == "duplicate"
    assert issue.reason == "duplicate of line 3 (same channel and reference)"


def test_member_import_counts_updates(base):
    data = b"external_id,channel,name\nM0001,store-xuhui,Lin X\nM0002,tmall,Zhao Ming\n"

    report = import_file(data, "members", file_name="m.csv")

    batch = ImportBatch.objects.get(pk=report.batch_id)
    assert (batch.updated_count, batch.unchanged_count) == (1, 1)


def test_dry_run_records_no_batch(base):
    before = ImportBatch.objects.count()

    report = import_file(
        CASES / "c17_transactions_bad_amount_row.csv", "activities", dry_run=True
    )

    assert report.batch_id is None
    assert ImportBatch.objects.count() == before


def test_refused_file_recorded_as_refused_batch(base):
    report = import_file(CASES / "c10b_transactions_dates_ambiguous.csv", "activities")

    batch = ImportBatch.objects.get(pk=report.batch_id)
    assert batch.status == ImportBatch.Status.REFUSED
    assert "occurred_at" in batch.message
    assert batch.message == report.refused
    assert batch.finished_at is not None
    assert batch.issues.count() == 0
    assert Activity.objects.count() == 0


def test_unexpected_failure_leaves_failed_batch_only(base, ladder, monkeypatch):
    def fail(member_ids, **options):
        raise RuntimeError("database went away")

    monkeypatch.setattr("members.importing.batches.evaluate", fail)

    with pytest.raises(RuntimeError):
        import_file(CASES / "c17_transactions_bad_amount_row.csv", "activities")

    batch = ImportBatch.objects.latest("pk")
    assert batch.status == ImportBatch.Status.FAILED
    assert "RuntimeError" in batch.message
    assert "nothing from the file was saved" in batch.message
    assert batch.created_count == 0
    assert batch.issues.count() == 0
    assert Activity.objects.count() == 0


# Issues and counters


def test_issue_values_are_truncated(base):
    long_value = "9" * (ISSUE_VALUE_MAX_LENGTH + 50)
    data = (
        "external_id,occurred_at,amount,channel,kind,reference\n"
        f"M0001,2024-05-01,{long_value},store-xuhui,purchase,L-1\n"
    )

    report = import_file(data.encode(), "activities", file_name="long.csv")

    issue = ImportIssue.objects.get(batch_id=report.batch_id)
    assert issue.column == "amount"
    # Values are cut for display before they are stored, below the column's cap.
    assert len(issue.value) == MAX_SHOWN_CHARS
    assert MAX_SHOWN_CHARS < ISSUE_VALUE_MAX_LENGTH
    assert issue.value.endswith("…")
    assert issue.status == "rejected"


def test_add_chunk_adds_to_counters(base):
    batch = running_batch()
    first, second = new_report(), new_report()
    first.total_rows = 2
    first.add_line(2, Status.CREATED)
    first.add_line(3, Status.CREATED)
    second.total_rows = 1
    second.add_line(4, Status.UNCHANGED)

    add_chunk(batch, first)
    add_chunk(batch, second)

    batch.refresh_from_db()
    assert batch.total_rows == 3
    assert batch.processed_rows == 3
    assert batch.created_count == 2
    assert batch.unchanged_count == 1


def test_add_chunk_rejects_same_report_twice(base):
    batch = running_batch()
    report = new_report()
    report.add_line(2, Status.CREATED)
    add_chunk(batch, report)

    with pytest.raises(ValueError, match="already added"):
        add_chunk(batch, report)

    batch.refresh_from_db()
    assert batch.created_count == 1


def test_finish_batch_rejects_unfinished_status(base):
    batch = running_batch()

    with pytest.raises(ValueError, match="Invalid final status"):
        finish_batch(batch, ImportBatch.Status.RUNNING)


# Provenance written by the writers


def test_activities_record_batch_and_line(base):
    report = import_file(CASES / "c17_transactions_bad_amount_row.csv", "activities")

    lines = dict(
        Activity.objects.filter(import_batch_id=report.batch_id).values_list(
            "reference", "import_line"
        )
    )
    assert lines == {"CN-3001": 2, "CN-3002": 3, "CN-3004": 5}


def test_member_import_writes_imported_members(base):
    data = (
        b"external_id,channel,name,joined_at\n"
        b"M0001,store-xuhui,Lin X,2023-05-02\n"
        b"NEW-1,store-xuhui,New One,\n"
        b"M0002,tmall,Zhao Ming,\n"
    )

    report = import_file(data, "members", file_name="m.csv")

    rows = {
        row.line: row for row in ImportedMember.objects.filter(batch_id=report.batch_id)
    }
    assert sorted(rows) == [2, 3]
    assert rows[2].created is False
    assert rows[2].previous == {
        "name": ["Lin Xiaoyu", "Lin X"],
        "joined_on": ["2023-05-01", "2023-05-02"],
    }
    assert rows[3].created is True
    assert rows[3].previous == {}
    identity = ChannelIdentity.objects.get(external_id="NEW-1")
    assert identity.import_batch_id == report.batch_id
    assert ChannelIdentity.objects.get(external_id="M0001").import_batch_id != (
        report.batch_id
    )


def test_member_matched_by_phone_gets_batch_identity(base):
    Channel.objects.create(code="douyin", name="Douyin", match_phone=True)
    data = b"external_id,channel,phone\nDY-1,douyin,13800000001\n"

    report = import_file(data, "members", file_name="m.csv")

    lin = Member.objects.get(identities__external_id="M0001")
    identity = ChannelIdentity.objects.get(external_id="DY-1")
    assert identity.member == lin
    assert identity.import_batch_id == report.batch_id
    assert report.updated == 1
    row = ImportedMember.objects.get(batch_id=report.batch_id)
    assert (row.member, row.created, row.line) == (lin, False, 2)


# Chunks fed to the writers one at a time


def test_activity_repeat_in_later_chunk_is_duplicate(base):
    batch = running_batch()
    first, second = new_report(), new_report()

    save_activities([activity_record(2, "R-1")], first, batch)
    save_activities([activity_record(5002, "R-1")], second, batch)

    (issue,) = second.skipped
    assert issue.status == Status.DUPLICATE
    assert issue.reason == "duplicate of line 2 (same channel and reference)"
    assert second.duplicates == 1
    assert Activity.objects.filter(reference="R-1").count() == 1


def test_activity_of_other_batch_is_already_imported(base):
    earlier, batch = running_batch(), running_batch()
    save_activities([activity_record(2, "R-1")], new_report(), earlier)
    report = new_report()

    save_activities([activity_record(9, "R-1")], report, batch)

    (issue,) = report.skipped
    assert issue.status == Status.ALREADY_IMPORTED
    assert report.already_imported == 1


def test_member_repeat_in_later_chunk_is_duplicate(base):
    batch = running_batch("members")
    first, second = new_report("members"), new_report("members")
    record = MemberRecord(line=3, channel="tmall", external_id="X1", fields={})
    repeat = MemberRecord(
        line=7003, channel="TMALL", external_id="X1", fields={"name": "Other"}
    )

    save_members([record], first, batch)
    save_members([repeat], second, batch)

    (issue,) = second.skipped
    assert issue.status == Status.DUPLICATE
    assert issue.reason == "duplicate of line 3 (same channel and external_id)"
    assert Member.objects.get(identities__external_id="X1").name == ""


def test_member_previous_merged_across_chunks(base):
    batch = running_batch("members")

    save_members(
        [MemberRecord(2, "store-xuhui", "M0001", {"name": "Second name"})],
        new_report("members"),
        batch,
    )
    save_members(
        [
            MemberRecord(
                9000,
                "store-xuhui",
                "M0001",
                {"name": "Third name", "joined_on": dt.date(2024, 1, 2)},
            )
        ],
        new_report("members"),
        batch,
    )

    row = ImportedMember.objects.get(batch=batch)
    assert row.line == 2
    assert row.previous == {
        "name": ["Lin Xiaoyu", "Third name"],
        "joined_on": ["2023-05-01", "2024-01-02"],
    }


def test_writer_queries_do_not_grow_with_rows(base):
    def count_queries(references: list[str]) -> int:
        batch = running_batch()
        records = [activity_record(n + 2, ref) for n, ref in enumerate(references)]
        with CaptureQueriesContext(connection) as queries:
            save_activities(records, new_report(), batch)
        return len(queries)

    few = count_queries([f"A-{n}" for n in range(5)])
    many = count_queries([f"B-{n}" for n in range(60)])

    assert few == many


# The error report download


def test_issues_csv_download_streams_every_issue(base, importer_client):
    report = import_file(CASES / "c20_transactions_duplicates.csv", "activities")
    again = import_file(CASES / "c20_transactions_duplicates.csv", "activities")
    url = reverse("admin:members_importbatch_issues", args=[again.batch_id])

    response = importer_client.get(url)

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert f"import-{again.batch_id}-issues.csv" in response["Content-Disposition"]
    body = b"".join(response.streaming_content)
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[0] == ["line", "status", "column", "value", "reason"]
    assert [row[0] for row in rows[1:]] == ["2", "3", "4", "5", "6"]
    assert rows[4] == [
        "5",
        "already imported",
        "reference",
        "TM-88001",
        "already imported",
    ]
    assert report.batch_id != again.batch_id


def test_issues_csv_quotes_formulas_and_keeps_chinese(base, importer_client):
    data = (
        "external_id,channel,email\n"
        "=1+1,门店-静安,a@example.com\n"
        "=1+1,门店-静安,b@example.com\n"
        "X2,门店-静安,不是邮箱\n"
    ).encode()
    report = import_file(data, "members", file_name="bad.csv")
    url = reverse("admin:members_importbatch_issues", args=[report.batch_id])

    body = b"".join(importer_client.get(url).streaming_content)

    rows = list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))
    assert rows[1][:4] == ["3", "duplicate", "external_id", "'=1+1"]
    # Values are masked by their column for the importer, so an e-mail cell
    # is masked as a whole.
    assert rows[2][:4] == ["4", "rejected", "email", "不***"]


def test_issues_csv_needs_import_permission(base, viewer_client):
    report = import_file(CASES / "c17_transactions_bad_amount_row.csv", "activities")
    url = reverse("admin:members_importbatch_issues", args=[report.batch_id])

    response = viewer_client.get(url)

    assert response.status_code == 403


# The batch admin pages


def test_batch_list_shows_counts(base, importer_client):
    report = import_file(CASES / "c17_transactions_bad_amount_row.csv", "activities")

    response = importer_client.get(reverse("admin:members_importbatch_changelist"))

    assert response.status_code == 200
    content = response.content.decode()
    assert "c17_transactions_bad_amount_row.csv" in content
    assert f"/{report.batch_id}/change/" in content


def test_batch_list_queries_do_not_grow(base, importer, importer_client):
    url = reverse("admin:members_importbatch_changelist")
    import_file(
        CASES / "c17_transactions_bad_amount_row.csv", "activities", user=importer
    )
    with CaptureQueriesContext(connection) as one:
        importer_client.get(url)
    for _ in range(3):
        import_file(
            CASES / "c20_transactions_duplicates.csv", "activities", user=importer
        )

    with CaptureQueriesContext(connection) as four:
        importer_client.get(url)

    assert len(four) == len(one)


def test_batch_page_is_read_only_with_issues(base, importer_client):
    report = import_file(CASES / "c17_transactions_bad_amount_row.csv", "activities")
    url = reverse("admin:members_importbatch_change", args=[report.batch_id])

    response = importer_client.get(url)

    content = response.content.decode()
    assert response.status_code == 200
    assert "12.5O" in content
    assert 'name="_save"' not in content
    assert "Download rejected and skipped lines (CSV)" in content
    assert "Roll back this import" in content


def test_batch_cannot_be_added_or_deleted(base, importer_client):
    report = import_file(CASES / "c17_transactions_bad_amount_row.csv", "activities")

    add = importer_client.get(reverse("admin:members_importbatch_add"))
    delete = importer_client.post(
        reverse("admin:members_importbatch_delete", args=[report.batch_id]),
        {"post": "yes"},
    )

    assert add.status_code == 403
    assert delete.status_code == 403
    assert ImportBatch.objects.filter(pk=report.batch_id).exists()


def test_confirmed_admin_import_links_batch(base, importer_client):
    upload_url = reverse("admin:members_activity_import")
    content = (CASES / "c17_transactions_bad_amount_row.csv").read_bytes()

    before = ImportBatch.objects.count()
    preview = importer_client.post(
        upload_url,
        {
            "resource": "0",
            "format": "0",
            "import_file": SimpleUploadedFile("c17.csv", content),
        },
    )
    assert "data:text/csv" in preview.content.decode()
    assert ImportBatch.objects.count() == before

    form = preview.context["confirm_form"]
    result = importer_client.post(
        reverse("admin:members_activity_process_import"), {**form.initial}
    )

    batch = ImportBatch.objects.latest("pk")
    page = result.content.decode()
    assert batch.created_by.username == "importer"
    assert reverse("admin:members_importbatch_change", args=[batch.pk]) in page
    assert reverse("admin:members_importbatch_issues", args=[batch.pk]) in page
    assert reverse("admin:members_importbatch_rollback", args=[batch.pk]) in page
    assert "data:text/csv" not in page


def test_issues_csv_of_unknown_batch_not_found(importer_client):
    url = reverse("admin:members_importbatch_issues", args=[999_999])

    response = importer_client.get(url)

    assert response.status_code == 404
