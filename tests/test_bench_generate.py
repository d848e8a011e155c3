"""The benchmark data generator and its import files, at a size tests can afford."""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal

import pytest
from django.db.models import Count, Sum

from bench import import_files
from bench.generate import CHANNELS, generate
from members.importing.streaming import import_path
from members.models import Activity, Member

MOBILE = re.compile(r"^1[3-9]\d{9}$")


def _ledger_fingerprint() -> tuple[int, Decimal, list[int]]:
    per_member = (
        Activity.objects.values("member_id")
        .annotate(events=Count("pk"))
        .order_by("member_id")
        .values_list("events", flat=True)
    )
    total = Activity.objects.aggregate(total=Sum("amount"))["total"]
    return Activity.objects.count(), total, list(per_member)


@pytest.mark.django_db
def test_generate_same_seed_same_data():
    first = generate(60, seed=7)
    fingerprint = _ledger_fingerprint()
    second = generate(60, seed=7)

    assert first["activities"] == second["activities"]
    assert _ledger_fingerprint() == fingerprint


@pytest.mark.django_db
def test_generate_shape():
    result = generate(120, seed=7)

    assert Member.objects.count() == 120
    assert Activity.objects.count() == result["activities"]
    phones = Member.objects.values_list("phone", flat=True)
    assert all(MOBILE.match(phone) for phone in phones)
    used = set(Activity.objects.values_list("channel__code", flat=True).distinct())
    assert used == {code for code, _kind in CHANNELS}
    counts = sorted(
        Activity.objects.values("member_id")
        .annotate(events=Count("pk"))
        .values_list("events", flat=True)
    )
    # Pareto-skewed: the busiest member has many times the median's events.
    assert counts[-1] >= 5 * counts[len(counts) // 2]


def test_dirty_file_spoils_one_row_in_a_hundred(tmp_path):
    path = tmp_path / "dirty.csv"

    faults = import_files.write_activities_csv(path, 1200, 50, "T", dirty=True)

    assert sum(faults.values()) == 12
    assert set(faults) == set(import_files.FAULTS)
    assert len(path.read_text(encoding="utf-8").splitlines()) == 1201


def test_clean_file_has_no_faults(tmp_path):
    faults = import_files.write_activities_csv(tmp_path / "clean.csv", 500, 50, "T")

    assert faults == Counter()


@pytest.mark.django_db
def test_dirty_import_counts_match_faults(tmp_path, ladder):
    members, activities = tmp_path / "members.csv", tmp_path / "dirty.csv"
    import_files.write_members(members, 40)
    faults = import_files.write_activities_csv(activities, 600, 40, "T", dirty=True)
    expected = import_files.expected_outcome(faults)

    member_report = import_path(members, "members")
    report = import_path(activities, "activities")

    assert member_report.created == 40
    assert report.refused is None
    assert report.rejected == expected["rejected"]
    assert report.duplicates == expected["duplicates"]
    assert report.created == 600 - expected["rejected"] - expected["duplicates"]
    assert report.channels_created == {import_files.UNKNOWN_CHANNEL}
