"""The streamed import: same results as the in-memory import, chunk by chunk.

Start state for most tests: the four members of base_members.csv and a
ladder where Gold needs a lifetime net spend of 5,000.00.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import tracemalloc
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.db.models import Sum
from django.utils import timezone

from members.importing.batches import rollback_batch
from members.importing.cleaning import RowIssue
from members.importing.csv_reader import CsvStream
from members.importing.errors import FileRejected
from members.importing.report import ImportReport
from members.importing.service import import_data, import_file
from members.importing.streaming import (
    IMPORTING,
    Progress,
    StreamReport,
    import_path,
    import_stream,
)
from members.models import (
    Activity,
    Channel,
    ChannelIdentity,
    ImportBatch,
    ImportedMember,
    ImportIssue,
    Member,
)
from tests.conftest import CASES, publish_spec
from tiers.models import RuleVersion, Tier, TierChange
from tiers.publishing import publish
from tiers.rules import Need, TierSpec, VersionSpec, build

ACTIVITY_HEADER = "external_id,occurred_at,amount,channel,kind,reference"
# Every case file except the base members; a file whose name contains
# "transactions" is an activity file, the others are member files.
CASE_FILES = sorted(
    path.name
    for path in CASES.iterdir()
    if path.suffix in (".csv", ".xlsx") and path.name != "base_members.csv"
)
# Staff's choices to import a case file with, when more than the defaults.
CASE_OPTIONS = {
    "c10b_transactions_dates_ambiguous.csv": [{}, {"date_order": "day_first"}]
}


def kind_of(name: str) -> str:
    return "activities" if "transactions" in name else "members"


@pytest.fixture
def ladder(db) -> dict[str, Tier]:
    base_tier = Tier.objects.create(name="Base", rank=0)
    gold = Tier.objects.create(name="Gold", rank=10)
    publish_spec(
        VersionSpec(
            tiers=[
                TierSpec(base_tier),
                TierSpec(gold, Need("net_spend", "5000", window="lifetime")),
            ]
        )
    )
    return {"base": base_tier, "gold": gold}


@pytest.fixture
def base(ladder) -> None:
    report = import_file(CASES / "base_members.csv", "members")
    assert report.created == 4


def member(external_id: str) -> Member:
    return Member.objects.get(identities__external_id=external_id)


def spend(external_id: str) -> Decimal:
    total = Activity.objects.filter(member=member(external_id)).aggregate(Sum("amount"))
    return total["amount__sum"] or Decimal("0")


def database_state() -> dict[str, object]:
    """Return the ledger by natural keys, so two runs compare whatever their ids."""
    identities = {
        member_id: sorted(
            (code, external_id)
            for m_id, code, external_id in ChannelIdentity.objects.values_list(
                "member_id", "channel__code", "external_id"
            )
            if m_id == member_id
        )
        for member_id in Member.objects.values_list("pk", flat=True)
    }
    members = sorted(
        (
            tuple(identities[pk]),
            name,
            phone,
            phone_e164,
            email,
            joined_on,
            tier,
        )
        for pk, name, phone, phone_e164, email, joined_on, tier in (
            Member.objects.values_list(
                "pk", "name", "phone", "phone_e164", "email", "joined_on", "tier__name"
            )
        )
    )
    activities = sorted(
        (
            code,
            reference,
            tuple(identities[member_id]),
            occurred_at,
            amount,
            kind,
            quantity,
            line,
        )
        for code, reference, member_id, occurred_at, amount, kind, quantity, line in (
            Activity.objects.values_list(
                "channel__code",
                "reference",
                "member_id",
                "occurred_at",
                "amount",
                "kind__code",
                "quantity",
                "import_line",
            )
        )
    )
    tier_changes = sorted(
        (tuple(identities[member_id]), to_tier)
        for member_id, to_tier in TierChange.objects.values_list(
            "member_id", "to_tier__name"
        )
    )
    return {
        "members": members,
        "activities": activities,
        "channels": sorted(Channel.objects.values_list("code", flat=True)),
        "tier_changes": tier_changes,
    }


def issue_rows(rejections: list[RowIssue], skipped: list) -> list[tuple]:
    rows = [(i.line, "rejected", i.column, i.value, i.reason) for i in rejections]
    rows += [(i.line, str(i.status), i.column, i.value, i.reason) for i in skipped]
    return sorted(rows)


def in_memory_outcome(path: Path, kind: str, options: dict) -> tuple:
    with transaction.atomic():
        report = import_data(path.read_bytes(), kind, file_name=path.name, **options)
        state = database_state()
        transaction.set_rollback(True)
    counts = {str(status): count for status, count in report.counts.items() if count}
    issues = issue_rows(report.rejections, report.skipped)
    return report.refused, report.total_rows, counts, issues, state


def streamed_outcome(path: Path, kind: str, options: dict, chunk_rows: int) -> tuple:
    with transaction.atomic():
        report = import_path(
            path, kind, chunk_rows=chunk_rows, keep_issues=True, **options
        )
        state = database_state()
        transaction.set_rollback(True)
    counts = {str(status): count for status, count in report.counts.items() if count}
    issues = []
    if report.issues is not None:
        issues = issue_rows(
            list(report.issues.rejections()), list(report.issues.skipped())
        )
        report.issues.close()
    return report.refused, report.total_rows, counts, issues, state


def case_parameters() -> list[tuple[str, dict]]:
    return [
        (name, options)
        for name in CASE_FILES
        for options in CASE_OPTIONS.get(name, [{}])
    ]


@pytest.mark.parametrize(("name", "options"), case_parameters())
@pytest.mark.parametrize("chunk_rows", [1, 2, 10_000])
def test_case_file_same_as_in_memory(base, name, options, chunk_rows):
    path = CASES / name
    kind = kind_of(name)

    expected = in_memory_outcome(path, kind, options)
    streamed = streamed_outcome(path, kind, options, chunk_rows)

    refused, total_rows, counts, issues, state = streamed
    assert refused == expected[0]
    assert total_rows == expected[1]
    assert counts == expected[2]
    assert issues == expected[3]
    assert state == expected[4]


def test_case_files_cover_both_formats():
    suffixes = {Path(name).suffix for name in CASE_FILES}

    assert suffixes == {".csv", ".xlsx"}
    assert len(CASE_FILES) >= 20


# Chunk boundaries


def test_refund_in_next_chunk_cancels_promotion(base, ladder, tmp_path):
    path = tmp_path / "pair.csv"
    path.write_text(
        f"{ACTIVITY_HEADER}\n"
        "M0003,2024-03-01 10:00,5000.00,store-xuhui,purchase,P-1\n"
        "M0003,2024-03-02 10:00,5000.00,store-xuhui,refund,R-1\n"
        "M0003,2024-03-03 10:00,300.00,store-xuhui,purchase,P-2\n"
    )

    report = import_path(path, "activities", chunk_rows=1)

    assert report.created == 3
    assert spend("M0003") == Decimal("300.00")
    assert member("M0003").tier == ladder["base"]
    assert not TierChange.objects.filter(to_tier=ladder["gold"]).exists()


def test_duplicate_in_later_chunk_names_first_line(base, tmp_path):
    path = tmp_path / "repeat.csv"
    path.write_text(
        f"{ACTIVITY_HEADER}\n"
        "M0001,2024-03-01 10:00,10.00,store-xuhui,purchase,P-1\n"
        "M0002,2024-03-01 11:00,20.00,store-xuhui,purchase,P-2\n"
        "M0001,2024-03-01 10:00,10.00,store-xuhui,purchase,P-1\n"
    )

    report = import_path(path, "activities", chunk_rows=2, keep_issues=True)

    assert report.created == 2
    assert report.duplicates == 1
    assert report.already_imported == 0
    assert report.issues is not None
    (skipped,) = list(report.issues.skipped())
    report.issues.close()
    assert skipped.line == 4
    assert "duplicate of line 2" in skipped.reason
    issue = ImportIssue.objects.get(batch_id=report.batch_id)
    assert issue.line == 4
    assert "duplicate of line 2" in issue.reason


def test_member_repeat_in_later_chunk_is_duplicate(base, tmp_path):
    path = tmp_path / "members.csv"
    path.write_text(
        "external_id,name,channel\nN-1,Ann,store-xuhui\nN-2,Bo,store-xuhui\n"
        "N-1,Ann,store-xuhui\n"
    )

    report = import_path(path, "members", chunk_rows=1, keep_issues=True)

    assert report.created == 2
    assert report.duplicates == 1
    assert report.issues is not None
    (skipped,) = list(report.issues.skipped())
    report.issues.close()
    assert "duplicate of line 2" in skipped.reason


def test_dry_run_reports_later_chunk_duplicate(base, tmp_path):
    path = tmp_path / "repeat.csv"
    path.write_text(
        f"{ACTIVITY_HEADER}\n"
        "M0001,2024-03-01 10:00,10.00,store-xuhui,purchase,P-1\n"
        "M0001,2024-03-01 10:00,10.00,store-xuhui,purchase,P-1\n"
    )
    batches = ImportBatch.objects.count()

    report = import_path(path, "activities", chunk_rows=1, dry_run=True)

    assert report.created == 1
    assert report.duplicates == 1
    assert Activity.objects.count() == 0
    assert ImportBatch.objects.count() == batches


# All or nothing


def ledger_counts() -> dict[str, int]:
    return {
        "members": Member.objects.count(),
        "identities": ChannelIdentity.objects.count(),
        "activities": Activity.objects.count(),
        "tier_changes": TierChange.objects.count(),
        "channels": Channel.objects.count(),
        "issues": ImportIssue.objects.count(),
        "imported_members": ImportedMember.objects.count(),
    }


def test_failure_mid_file_saves_nothing(base, tmp_path):
    path = tmp_path / "members.csv"
    rows = [f"F-{n},Name {n},new-channel" for n in range(30)]
    rows.append("F-1,Name 1,new-channel")
    path.write_text("external_id,name,channel\n" + "\n".join(rows) + "\n")
    before = database_state()
    counts = ledger_counts()

    def fail_on_third_chunk(progress: Progress) -> None:
        if progress.phase == IMPORTING and progress.done > 20:
            raise RuntimeError("injected failure")

    with pytest.raises(RuntimeError, match="injected failure"):
        import_path(path, "members", chunk_rows=10, progress=fail_on_third_chunk)

    assert database_state() == before
    assert ledger_counts() == counts
    batch = ImportBatch.objects.latest("pk")
    assert batch.status == ImportBatch.Status.FAILED
    assert "RuntimeError" in batch.message
    assert batch.created_count == 0


def test_refused_file_records_refused_batch(base):
    path = CASES / "c10b_transactions_dates_ambiguous.csv"
    counts = ledger_counts()

    report = import_path(path, "activities")

    assert report.refused is not None
    assert "ambiguous" in report.refused
    assert ledger_counts() == counts
    batch = ImportBatch.objects.get(pk=report.batch_id)
    assert batch.status == ImportBatch.Status.REFUSED
    assert "ambiguous" in batch.message


def test_applied_batch_has_counts(base):
    report = import_path(CASES / "c17_transactions_bad_amount_row.csv", "activities")

    batch = ImportBatch.objects.get(pk=report.batch_id)
    assert batch.status == ImportBatch.Status.APPLIED
    assert batch.created_count == 3
    assert batch.rejected_count == 1
    assert batch.total_rows == 4
    assert ImportIssue.objects.get(batch=batch).column == "amount"


# Limits


def test_streaming_row_limit(base, tmp_path, settings):
    settings.CRM_IMPORT_STREAMING_MAX_ROWS = 3
    path = tmp_path / "members.csv"
    rows = "\n".join(f"L-{n},store-xuhui" for n in range(4))
    path.write_text(f"external_id,channel\n{rows}\n")

    report = import_path(path, "members")

    assert report.refused == (
        "The file has more than 3 data rows. Split it into smaller files."
    )
    assert not ChannelIdentity.objects.filter(external_id__startswith="L-").exists()


def test_streaming_ignores_in_memory_row_limit(base, tmp_path, settings):
    settings.CRM_IMPORT_MAX_ROWS = 3
    path = tmp_path / "members.csv"
    rows = "\n".join(f"L-{n},store-xuhui" for n in range(4))
    path.write_text(f"external_id,channel\n{rows}\n")

    report = import_path(path, "members")

    assert report.created == 4


def test_streaming_size_limit(base, tmp_path, settings):
    settings.CRM_IMPORT_STREAMING_MAX_BYTES = 1024 * 1024
    path = tmp_path / "big.csv"
    path.write_bytes(b"external_id,channel\n" + b"x" * (1024 * 1024))

    report = import_path(path, "members")

    assert report.refused is not None
    assert "more than the 1 MB limit" in report.refused


def test_header_only_file_refused(base, tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("nothing,useful\n")

    report = import_path(path, "activities")

    assert report.refused is not None
    assert report.refused.startswith("The file has no data rows")


# Reading in blocks


def test_csv_stream_reads_lines_across_blocks(monkeypatch, tmp_path):
    monkeypatch.setattr("members.importing.csv_reader._BLOCK_BYTES", 5)
    text = 'id,note\r\n1,"two\r\nlines"\r\n2,été\r3,喆\n'
    path = tmp_path / "lines.csv"
    path.write_bytes(text.encode("gb18030"))

    stream = CsvStream(lambda: path.open("rb"), path.stat().st_size, "gb18030")
    with stream.rows() as (headers, rows):
        found = [(row.line, row.cells) for row in rows]

    assert headers == ["id", "note"]
    assert found == [
        (2, ("1", "two\r\nlines")),
        (4, ("2", "été")),
        (5, ("3", "喆")),
    ]


def test_csv_stream_names_invalid_byte_position(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"id,name\n1,Ann\n2,\xff\n")

    with pytest.raises(FileRejected, match="position 16"):
        CsvStream(lambda: path.open("rb"), path.stat().st_size, "utf-8")


def test_csv_stream_invalid_byte_after_head(monkeypatch, tmp_path):
    monkeypatch.setattr("members.importing.csv_reader._BLOCK_BYTES", 4096)
    prefix = b"id,name\n" + b"1,Ann\n" * 20_000
    path = tmp_path / "bad.csv"
    path.write_bytes(prefix + b"2,\xff\n")
    stream = CsvStream(lambda: path.open("rb"), path.stat().st_size, "utf-8")

    with pytest.raises(FileRejected) as raised, stream.rows() as (_headers, rows):
        list(rows)

    assert f"position {len(prefix) + 2}" in raised.value.message


def test_legacy_encoding_detected_on_sample(monkeypatch, tmp_path):
    monkeypatch.setattr("members.importing.csv_reader._DETECTION_SAMPLE_BYTES", 400)
    gbk = (CASES / "c05_members_gbk.csv").read_bytes()
    header, *rows = gbk.split(b"\r\n")
    filler = [
        f"G-{n},Plain,plain@example.com,store,2024/4/1".encode() for n in range(50)
    ]
    path = tmp_path / "gbk.csv"
    path.write_bytes(b"\r\n".join([header, *filler, *rows]))

    stream = CsvStream(lambda: path.open("rb"), path.stat().st_size)

    assert stream.encoding == "gb18030"


# Memory


def activity_file(path: Path, rows: int) -> None:
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(ACTIVITY_HEADER.split(","))
        for n in range(rows):
            writer.writerow(
                [
                    f"M000{n % 4 + 1}",
                    f"2024-03-01 10:{n % 60:02d}",
                    f"{n % 500}.50",
                    "store-xuhui",
                    "purchase",
                    f"MEM-{n}",
                ]
            )


def peak_dry_run(path: Path) -> int:
    tracemalloc.start()
    try:
        report = import_path(path, "activities", dry_run=True, chunk_rows=2_000)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.created > 0
    return peak


def test_memory_flat_in_rows(base, tmp_path):
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    activity_file(small, 4_000)
    activity_file(large, 20_000)

    small_peak = peak_dry_run(small)
    large_peak = peak_dry_run(large)

    # Five times the rows: a file held in memory would need about five times
    # the memory, while a streamed one needs about the same.
    assert large_peak < small_peak * 2


# Command


def test_command_streams_csv_and_prints_issues(base, capsys):
    call_command("import_activities", str(CASES / "c20_transactions_duplicates.csv"))

    output = capsys.readouterr()
    assert "4 created" in output.out
    assert "Skipped: Line 5, column reference ('TM-88001'): duplicate of line 3" in (
        output.out
    )
    assert "importing" in output.err
    batch = ImportBatch.objects.latest("pk")
    assert batch.status == ImportBatch.Status.APPLIED
    assert batch.created_count == 4


def test_command_dry_run_prints_rejections(base, capsys):
    call_command(
        "import_activities",
        str(CASES / "c17_transactions_bad_amount_row.csv"),
        "--dry-run",
    )

    output = capsys.readouterr().out
    assert "Dry run, nothing saved" in output
    assert "Rejected: Line 4, column amount ('12.5O')" in output
    assert Activity.objects.count() == 0


def test_command_refused_file_fails(base):
    with pytest.raises(CommandError, match="ambiguous"):
        call_command(
            "import_activities", str(CASES / "c10b_transactions_dates_ambiguous.csv")
        )
    assert Activity.objects.count() == 0


def test_command_accepts_file_above_upload_limit(base, tmp_path, settings):
    settings.CRM_IMPORT_MAX_BYTES = 1024
    path = tmp_path / "members.csv"
    rows = "\n".join(f"B-{n:05d},Name {n},store-xuhui" for n in range(200))
    path.write_text(f"external_id,name,channel\n{rows}\n")
    assert path.stat().st_size > 1024

    call_command("import_members", str(path))

    assert ChannelIdentity.objects.filter(external_id__startswith="B-").count() == 200


def test_stream_report_summary_matches_import_report():
    report = ImportReport(kind="members", file_name="f.csv", dry_run=False)
    report.total_rows = 3
    streamed = StreamReport(kind="members", file_name="f.csv", dry_run=False)
    streamed.total_rows = 3

    assert streamed.summary() == report.summary()


def test_unknown_kind_raises_value_error(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a\n1\n")

    with pytest.raises(ValueError, match="Unknown import kind"):
        import_stream(lambda: path.open("rb"), "orders", size=4, dry_run=True)


def test_tiers_evaluated_from_saved_rows(base, ladder, tmp_path, settings):
    # One member per evaluation chunk, so evaluating runs between the reads
    # of the member ids.
    settings.CRM_EVALUATION_CHUNK_SIZE = 1
    path = tmp_path / "big.csv"
    path.write_text(
        f"{ACTIVITY_HEADER}\n"
        "M0001,2024-03-01 10:00,3000.00,store-xuhui,purchase,G-1\n"
        "M0002,2024-03-01 10:00,10.00,store-xuhui,purchase,G-2\n"
        "M0001,2024-03-02 10:00,2500.00,store-xuhui,purchase,G-3\n"
    )

    report = import_path(path, "activities", chunk_rows=1)

    assert report.members_evaluated == 2
    assert member("M0001").tier == ladder["gold"]
    assert member("M0002").tier == ladder["base"]
    assert TierChange.objects.filter(to_tier=ladder["gold"]).count() == 1


def test_streamed_import_reads_xlsx(base):
    report = import_path(CASES / "c02_members_phone_as_number.xlsx", "members")

    assert report.created == 3
    assert member("1003").phone == "07700900123"


def test_in_memory_file_bytes_unchanged(base):
    data = (CASES / "c04_members_utf8_bom.csv").read_bytes()

    report = import_stream(
        lambda: io.BytesIO(data), "members", size=len(data), file_name="bom.csv"
    )

    assert report.created == 3
    assert Member.objects.filter(name="张伟").exists()


def test_streamed_rollback_restores_tier(base, ladder, tmp_path):
    publish(
        build(
            VersionSpec(
                tiers=[
                    TierSpec(ladder["base"]),
                    TierSpec(
                        ladder["gold"], Need("net_spend", "5000", window="lifetime")
                    ),
                ]
            )
        ),
        user=None,
        reason="test set-up",
        policy=RuleVersion.Policy.NEW_ACTIVITY,
        effective_from=timezone.now() - dt.timedelta(minutes=1),
        allow_past=True,
    )
    path = tmp_path / "gold.csv"
    path.write_text(
        f"{ACTIVITY_HEADER}\n"
        "M0003,2024-03-01 10:00,3000.00,store-xuhui,purchase,P-1\n"
        "M0003,2024-03-02 10:00,3000.00,store-xuhui,purchase,P-2\n"
    )
    report = import_path(path, "activities", chunk_rows=1)
    assert member("M0003").tier == ladder["gold"]
    batch = ImportBatch.objects.get(pk=report.batch_id)
    previous = ImportedMember.objects.get(batch=batch).previous
    assert previous["tier"] == [ladder["base"].pk, ladder["gold"].pk]

    summary = rollback_batch(batch, None)

    assert member("M0003").tier == ladder["base"]
    assert summary["tiers_restored"] == 1
