"""The CDNOW demo loader: conversion, import through the staff code, reruns."""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command

from crm import demo
from members.models import Activity, ChannelIdentity, Member
from tiers.models import Tier, TierChange

# The layout of CDNOW_master.txt: a header, then space-padded columns, CRLF.
SAMPLE = (
    " customer_id  date number_of_cds  dollar_value\r\n"
    " 00001 19970101  1   11.77\r\n"
    " 00002 19970112  1   12.00\r\n"
    " 00002 19970112  5   77.00\r\n"
    " 00003 19970102  2   20.76\r\n"
    " 00003 19980330  2  420.76\r\n"
    " 00001 19980615  9  250.00\r\n"
    " 00001 19980616  3   90.00\r\n"
    " 00001 19980617  3   90.00\r\n"
    " 00001 19980618  3   90.00\r\n"
    " 00001 19980619  3   90.00\r\n"
    "     1 19980101  1   10.00\r\n"
)


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    path = tmp_path / "Lifetimes-0.11.3-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(demo.CDNOW_MEMBER, SAMPLE)
    return path


def test_year_shift_ends_before_today():
    assert demo.year_shift(dt.date(2026, 12, 4)) == 28
    assert demo.year_shift(dt.date(2026, 6, 30)) == 28
    assert demo.year_shift(dt.date(2026, 6, 29)) == 27


def test_conversion_keeps_ids_as_text(wheel, tmp_path):
    source = demo.extract_cdnow(wheel, tmp_path / "CDNOW_master.txt")

    files = demo.convert_cdnow(source, tmp_path, dt.date(2026, 12, 4))

    assert files.customers == 4  # 00001, 00002, 00003 and 1
    assert files.purchases == 11
    members = files.members.read_text().splitlines()
    assert members[1].startswith("00001,")
    assert any(line.startswith("1,") for line in members)
    activities = files.activities.read_text().splitlines()
    # Two lines for 00002 on one day get distinct, stable references.
    assert "00002-19970112-1" in activities[2]
    assert "00002-19970112-2" in activities[3]
    assert activities[1].startswith("00001,2025-01-01 12:00,11.77,1,")


def test_bad_line_is_reported(tmp_path):
    source = tmp_path / "bad.txt"
    source.write_text(" 00001 19970101  1\r\n")

    with pytest.raises(demo.DemoDataError, match="line 1: expected 4 fields"):
        demo.convert_cdnow(source, tmp_path, dt.date(2026, 12, 4))


@pytest.mark.django_db
def test_load_demo_twice_adds_nothing(wheel, capsys):
    call_command("load_demo", "--wheel", str(wheel))
    first = capsys.readouterr().out

    assert Member.objects.count() == 4
    assert Activity.objects.count() == 11
    assert ChannelIdentity.objects.filter(external_id="00001").exists()
    assert ChannelIdentity.objects.filter(external_id="1").exists()
    assert Tier.objects.count() == 4
    assert Member.objects.filter(tier__isnull=True).count() == 0
    assert "/m/" in first
    assert "user demo" in first

    changes = TierChange.objects.count()
    call_command("load_demo", "--wheel", str(wheel))

    assert Member.objects.count() == 4
    assert Activity.objects.count() == 11
    assert Tier.objects.count() == 4
    assert TierChange.objects.count() == changes
