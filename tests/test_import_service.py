"""The import service as a whole: transactions, matching, counts and commands."""

from __future__ import annotations

import logging
import time
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from members.importing.formats import UploadedFile
from members.importing.service import import_file
from members.models import Activity, Channel, ChannelIdentity, Member
from members.resources import ActivityResource
from tests.conftest import CASES, make_member

ACTIVITY_HEADER = "external_id,occurred_at,amount,channel,kind,reference\n"


@pytest.fixture
def base(db) -> None:
    import_file(CASES / "base_members.csv", "members")


def activities_file(*lines: str) -> bytes:
    return (ACTIVITY_HEADER + "\n".join(lines) + "\n").encode()


def members_file(count: int, start: int = 1) -> bytes:
    lines = ["external_id,name,phone,email,channel,joined_at"]
    for number in range(start, start + count):
        lines.append(
            f"{number:05d},Member {number},1380000{number:04d},m{number}@example.com,"
            f"store-xuhui,2024-01-01"
        )
    return ("\n".join(lines) + "\n").encode()


def purchases_file(count: int, start: int = 1) -> bytes:
    lines = [
        f"{number:05d},2024-02-01 10:00,{number}.50,store-xuhui,purchase,Q-{number}"
        for number in range(start, start + count)
    ]
    return activities_file(*lines)


# Transactions


def test_unexpected_error_saves_nothing(base, ladder, monkeypatch):
    def fail(member_ids, **options):
        raise RuntimeError("database went away")

    monkeypatch.setattr("members.importing.batches.evaluate", fail)

    with pytest.raises(RuntimeError):
        import_file(CASES / "c21_transactions_refund_pair.csv", "activities")

    assert Activity.objects.count() == 0


def test_unexpected_error_in_admin_path_is_reported(base, ladder, monkeypatch):
    def fail(member_ids, **options):
        raise RuntimeError("database went away")

    monkeypatch.setattr("members.importing.batches.evaluate", fail)
    upload = UploadedFile(
        (CASES / "c20_transactions_duplicates.csv").read_bytes(), "csv"
    )

    result = ActivityResource().import_data(upload, dry_run=False, file_name="c20.csv")

    assert result.has_errors()
    assert "nothing was saved" in str(result.base_errors[0].error)
    assert Activity.objects.count() == 0


def test_dry_run_reports_without_saving(base):
    report = import_file(
        CASES / "c20_transactions_duplicates.csv", "activities", dry_run=True
    )

    assert report.created == 4
    assert report.duplicates == 1
    assert Activity.objects.count() == 0


def test_rejected_file_saves_nothing(base):
    report = import_file(b"external_id,name\n1,Ann\n", "members", file_name="x.csv")

    assert "Required column channel not found" in report.refused
    assert Member.objects.count() == 4


# Members


def test_member_update_keeps_values_of_empty_cells(base):
    changed = b"external_id,name,phone,email,channel\nM0001,Lin Xiao Yu,,,store-xuhui\n"

    report = import_file(changed, "members", file_name="changed.csv")

    assert report.updated == 1
    lin = Member.objects.get(identities__external_id="M0001")
    assert lin.name == "Lin Xiao Yu"
    assert lin.phone == "13800000001"
    assert lin.email == "lin.xiaoyu@example.com"


def test_member_import_again_is_unchanged(base):
    report = import_file(CASES / "base_members.csv", "members")

    assert report.unchanged == 4
    assert report.created == 0
    assert Member.objects.count() == 4


def test_member_unknown_channel_created_and_reported(base):
    report = import_file(
        b"external_id,channel\nX1,pop-up-store\n", "members", file_name="x.csv"
    )

    assert report.channels_created == ["pop-up-store"]
    assert Channel.objects.get(code="pop-up-store").kind == Channel.Kind.OTHER


def test_member_channel_matched_ignoring_case(base):
    report = import_file(
        b"external_id,channel\nM0002,TMALL\n", "members", file_name="x.csv"
    )

    assert report.unchanged == 1
    assert report.channels_created == []


def test_member_invalid_email_rejected(base):
    data = (
        b"external_id,channel,email\nX1,tmall,not-an-address\nX2,tmall,x2@example.com\n"
    )

    report = import_file(data, "members", file_name="x.csv")

    (issue,) = report.rejections
    assert (issue.line, issue.column, issue.value) == (2, "email", "not-an-address")
    assert report.created == 1


def test_member_duplicate_in_file_skipped(base):
    data = b"external_id,channel,name\nX1,tmall,First\nX1,tmall,Second\n"

    report = import_file(data, "members", file_name="x.csv")

    assert report.created == 1
    assert report.duplicates == 1
    assert "duplicate of line 2" in report.skipped[0].reason
    assert Member.objects.get(identities__external_id="X1").name == "First"


def test_member_invalid_phone_kept_without_e164(base):
    import_file(
        b"external_id,channel,phone\nX1,tmall,12345\n", "members", file_name="x.csv"
    )

    member = Member.objects.get(identities__external_id="X1")
    assert member.phone == "12345"
    assert member.phone_e164 == ""


# Activities


def test_activity_member_found_in_other_channel(base):
    report = import_file(
        activities_file("M0002,2024-02-01 10:00,10,pop-up,purchase,P-1"),
        "activities",
        file_name="x.csv",
    )

    assert report.created == 1
    assert Activity.objects.get(reference="P-1").member.name == "Zhao Ming"
    assert report.channels_created == ["pop-up"]


def test_activity_ambiguous_member_rejected(base):
    store = Channel.objects.get(code="store-xuhui")
    tmall = Channel.objects.get(code="tmall")
    make_member(store, "SAME")
    make_member(tmall, "SAME")

    report = import_file(
        activities_file("SAME,2024-02-01 10:00,10,douyin,purchase,P-1"),
        "activities",
        file_name="x.csv",
    )

    (issue,) = report.rejections
    assert issue.column == "external_id"
    assert issue.value == "SAME"
    assert "matches 2 different members" in issue.reason
    assert Activity.objects.count() == 0
    assert not Channel.objects.filter(code="douyin").exists()


def test_activity_signs_follow_kind(base):
    report = import_file(
        activities_file(
            "M0001,2024-02-01 10:00,30,store-xuhui,refund,R-1",
            "M0001,2024-02-01 11:00,-30,store-xuhui,purchase,P-1",
        ),
        "activities",
        file_name="x.csv",
    )

    assert Activity.objects.get(reference="R-1").amount == Decimal("-30.00")
    (issue,) = report.rejections
    assert (issue.line, issue.column, issue.value) == (3, "amount", "-30")
    assert "kind refund" in issue.reason


def test_activity_unknown_kind_lists_codes(base):
    report = import_file(
        activities_file("M0001,2024-02-01 10:00,30,store-xuhui,gift,G-1"),
        "activities",
        file_name="x.csv",
    )

    (issue,) = report.rejections
    assert issue.column == "kind"
    assert issue.value == "gift"
    assert "purchase, referral, refund, review, visit" in issue.reason


def test_activity_kind_matched_case_insensitively(base):
    report = import_file(
        activities_file("M0001,2024-02-01 10:00,30,store-xuhui,Purchase,P-1"),
        "activities",
        file_name="x.csv",
    )

    assert report.created == 1


def test_activity_row_reports_every_bad_value(base):
    report = import_file(
        activities_file("M0001,someday,abc,store-xuhui,purchase,"),
        "activities",
        file_name="x.csv",
    )

    assert report.rejected == 1
    columns = [issue.column for issue in report.rejections]
    assert columns == ["reference", "occurred_at", "amount"]


def test_activity_chinese_headers(base):
    data = "会员号,交易时间,实付金额,渠道,类型,订单号,数量\nM0001,2024/2/1 10:00,￥99.00,tmall,purchase,T-1,2\n"

    report = import_file(data.encode("gb18030"), "activities", file_name="x.csv")

    assert report.created == 1
    activity = Activity.objects.get(reference="T-1")
    assert activity.amount == Decimal("99.00")
    assert activity.quantity == 2
    assert activity.source == Activity.Source.IMPORT


# Query counts and speed


def test_member_import_queries_stay_flat(base, ladder, django_assert_max_num_queries):
    import_file(members_file(20), "members", file_name="members20.csv")

    # SQLite takes at most 999 parameters per statement, so about 70 to 140
    # rows go in each INSERT, depending on the table. The queries:
    # - the batch INSERT, before the transaction,
    # - savepoint, channels, identities, identities with their batch lines,
    #   3 member INSERTs, 2 identity INSERTs, 2 imported-member INSERTs,
    # - evaluation: the version in effect, its rule groups, requirements,
    #   tier rules with tiers, kinds, weights, members, active overrides,
    #   one aggregate,
    # - a savepoint, the locking SELECT of the members to write, one UPDATE
    #   per tier, 2 history INSERTs, 2 releases,
    # - the tier fields read before and after the evaluation, and the
    #   batch's imported-member rows for the tier changes, updated at once,
    # - the batch's counters and its status, 2 UPDATEs,
    # - the erasure tombstone look-up, and the audit row: the batch's
    #   counters, the members it touched, the INSERT.
    with django_assert_max_num_queries(38):
        report = import_file(members_file(200, start=100), "members", file_name="m.csv")

    assert report.created == 200


def test_activity_import_queries_stay_flat(base, ladder, django_assert_max_num_queries):
    import_file(members_file(200), "members", file_name="members.csv")

    # No tier changes here, so no member UPDATE. The queries:
    # - the batch INSERT, before the transaction,
    # - savepoint, kinds, channels, known references, identities, 3 activity
    #   INSERTs,
    # - evaluation: the version in effect, its rule groups, requirements,
    #   tier rules with tiers, kinds, weights, members, active overrides,
    #   one aggregate,
    # - the tier fields read before and after the evaluation,
    # - the batch's counters and its status, 2 UPDATEs, and the release,
    # - the erasure tombstone look-up, and the audit row: the batch's
    #   counters, the members it touched, the INSERT.
    with django_assert_max_num_queries(27):
        report = import_file(purchases_file(200), "activities", file_name="buys.csv")

    assert report.created == 200


def test_demo_sized_file_imports_within_a_minute(db):
    """23,570 members and 69,659 purchases, the size of the CDNOW demo data."""
    members = ["external_id,name,channel"]
    members += [f"{number:05d},Customer {number},cdnow" for number in range(1, 23_571)]
    purchases = ["external_id,occurred_at,amount,channel,kind,reference,quantity"]
    purchases += [
        f"{number % 23_570 + 1:05d},19970101,{number % 90 + 10}.77,cdnow,purchase,"
        f"CD-{number},1"
        for number in range(69_659)
    ]

    started = time.perf_counter()
    import_file("\n".join(members).encode(), "members", file_name="cdnow_members.csv")
    report = import_file(
        "\n".join(purchases).encode(), "activities", file_name="cdnow.csv"
    )
    elapsed = time.perf_counter() - started

    assert report.created == 69_659
    assert ChannelIdentity.objects.filter(external_id="00001").exists()
    assert not ChannelIdentity.objects.filter(external_id="1").exists()
    assert elapsed < 60


# Logging


def test_logs_omit_personal_data(base, caplog):
    caplog.set_level(logging.INFO, logger="members.importing")

    import_file(CASES / "c04_members_utf8_bom.csv", "members")

    text = "\n".join(record.getMessage() for record in caplog.records)
    assert "import started file=c04_members_utf8_bom.csv" in text
    assert "created=3" in text
    for personal in ("张伟", "13800007777", "zhang.wei@example.com"):
        assert personal not in text


# Commands


def test_import_members_command_prints_summary(base, capsys):
    call_command("import_members", str(CASES / "c01_members_leading_zeros.csv"))

    output = capsys.readouterr().out
    assert "3 created" in output
    assert ChannelIdentity.objects.filter(external_id="000123").exists()


def test_import_activities_command_prints_rejections(base, capsys):
    call_command(
        "import_activities", str(CASES / "c17_transactions_bad_amount_row.csv")
    )

    output = capsys.readouterr().out
    assert "3 created" in output
    assert "Rejected: Line 4, column amount ('12.5O')" in output


def test_import_command_dry_run_saves_nothing(base, capsys):
    call_command(
        "import_activities",
        str(CASES / "c17_transactions_bad_amount_row.csv"),
        "--dry-run",
    )

    assert "Dry run, nothing saved" in capsys.readouterr().out
    assert Activity.objects.count() == 0


def test_import_command_rejected_file_fails(base):
    with pytest.raises(CommandError, match="ambiguous"):
        call_command(
            "import_activities", str(CASES / "c10b_transactions_dates_ambiguous.csv")
        )


def test_import_command_date_order_option(base):
    call_command(
        "import_activities",
        str(CASES / "c10b_transactions_dates_ambiguous.csv"),
        "--date-order",
        "month_first",
    )

    assert Activity.objects.count() == 3


def test_import_command_encoding_option(base):
    call_command(
        "import_members", str(CASES / "c05_members_gbk.csv"), "--encoding", "gb18030"
    )

    assert Member.objects.filter(name="陈喆").exists()


def test_import_command_missing_file_fails(db):
    with pytest.raises(CommandError, match="Cannot read"):
        call_command("import_members", "/nonexistent/members.csv")
