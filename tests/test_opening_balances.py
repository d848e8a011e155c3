"""Opening balances and opening tiers migrated from an earlier program.

Personas: Alice is a member of the Xuhui store who comes over from the old
program as Gold with a large balance. Bob reached Platinum in this program
before the migration, so an opening tier must not lower him. Dates are
counted back from today, because an opening balance cannot be dated in the
future.
"""

from __future__ import annotations

import datetime as dt
import io
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone, translation
from openpyxl import Workbook
from rest_framework.test import APIClient

from benefits.issuing import issue_for_tier_changes
from benefits.models import Grant
from members.api_auth import issue_token
from members.importing.batches import rollback_batch
from members.importing.cleaning import kinds_by_label
from members.importing.openings import (
    TIER_DROPPED,
    TIER_SET,
    OpeningOptions,
    confirm_openings,
    describe_tier_outcomes,
    import_openings,
    tier_outcome_counts,
)
from members.importing.service import import_data
from members.models import (
    Activity,
    ActivityKind,
    Channel,
    ImportBatch,
    ImportedMember,
    Member,
)
from tests.conftest import SHANGHAI, make_member, publish_spec, record, standard_spec
from tests.test_benefits_support import create_catalogue
from tiers.evaluation import evaluate, explain_member
from tiers.explaining import activities_that_counted
from tiers.ladder import Ladder
from tiers.metrics import KindCatalogue, MetricSpec, WindowSpec, compute_metrics
from tiers.models import Metric, RuleVersion, Tier, TierChange, Validity, Window
from tiers.publishing import publish
from tiers.rendering import activity_label, describe_activity
from tiers.rules import Need, TierSpec, VersionSpec, WeightSpec, all_of, build

pytestmark = pytest.mark.django_db

HEADER = "external_id,channel,tier,growth_value,spend,as_of"


def midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=SHANGHAI)


def days_ago(days: int) -> dt.date:
    return timezone.localdate() - dt.timedelta(days=days)


def openings_file(*lines: str, header: str = HEADER) -> bytes:
    return ("\n".join([header, *lines]) + "\n").encode()


def run_import(data: bytes, **options: Any) -> Any:
    dry_run = options.pop("dry_run", False)
    return import_openings(
        data,
        file_name="openings.csv",
        options=OpeningOptions(**options),
        dry_run=dry_run,
    )


def opening_of(member: Member) -> Activity:
    return Activity.objects.select_related("kind").get(
        member=member, kind__role=ActivityKind.Role.OPENING
    )


@pytest.fixture
def alice(store: Channel) -> Member:
    return make_member(store, "A-1", name="Alice")


@pytest.fixture
def staff_user() -> User:
    user = User.objects.create_user(
        "migrator", "m@example.com", "pw-12345-x", is_staff=True
    )
    user.user_permissions.add(
        Permission.objects.get(codename="import", content_type__app_label="members")
    )
    return user


# Metrics


@pytest.fixture
def weighted(tiers: dict[str, Tier]) -> Ladder:
    """The standard ladder with growth value weights: 1 point per ¥1 on
    purchases, capped at 100 a day, and 10 points per ¥1 on opening
    balances, which evaluation must ignore."""
    spec = standard_spec(
        tiers,
        weights=[
            WeightSpec("purchase", per_unit=1, daily_cap=100),
            WeightSpec("opening", per_unit=10),
        ],
    )
    return Ladder.load(publish_spec(spec))


def test_metrics_count_opening_spend_and_growth(weighted, store, alice):
    cut_over = days_ago(30)
    run_import(openings_file(f"A-1,store-xuhui,,8000,6000,{cut_over}"))
    record(alice, store, "purchase", midnight(days_ago(10)), "500")
    window = WindowSpec(Window.ROLLING_DAYS, 365)
    specs = [MetricSpec(metric, window) for metric in Metric.values]

    metrics = compute_metrics(
        Activity.objects.filter(member=alice),
        specs,
        KindCatalogue.load(weighted.version_id),
        timezone.now(),
    )[alice.pk]

    assert metrics[MetricSpec(Metric.NET_SPEND, window).key] == Decimal("6500")
    # 8,000 carried over as it is, plus the purchase's 500 capped at 100.
    assert metrics[MetricSpec(Metric.GROWTH_VALUE, window).key] == Decimal("8100")
    assert metrics[MetricSpec(Metric.ORDERS, window).key] == 1
    assert metrics[MetricSpec(Metric.ACTIVE_DAYS, window).key] == 1
    assert metrics[MetricSpec(Metric.VISITS, window).key] == 0


def test_growth_rule_promotes_with_opening(tiers, store, alice):
    publish_spec(
        VersionSpec(
            tiers=[
                TierSpec(tiers["bronze"]),
                TierSpec(tiers["gold"], all_of(Need("growth_value", 5000))),
            ]
        )
    )

    run_import(openings_file(f"A-1,store-xuhui,,6000,,{days_ago(30)}"))

    alice.refresh_from_db()
    assert alice.tier == tiers["gold"]
    change = TierChange.objects.get(member=alice)
    assert change.reason == TierChange.Reason.INITIAL


def test_rolling_window_keeps_opening_365_days(tiers, store, alice):
    publish_spec(
        VersionSpec(
            tiers=[
                TierSpec(tiers["bronze"]),
                TierSpec(tiers["silver"], all_of(Need("net_spend", 1000))),
            ]
        )
    )
    cut_over = days_ago(400)
    run_import(openings_file(f"A-1,store-xuhui,,,1200,{cut_over}"))
    last_day = midnight(cut_over + dt.timedelta(days=364)) + dt.timedelta(hours=20)
    first_day_after = midnight(cut_over + dt.timedelta(days=365))

    kept = explain_member(alice, as_of=last_day)
    expired = explain_member(alice, as_of=first_day_after)

    assert kept.tier.id == tiers["silver"].pk
    assert expired.tier.id == tiers["bronze"].pk


# Importing


def test_import_saves_opening_activity(ladder, store, alice):
    cut_over = days_ago(20)

    report = run_import(openings_file(f"A-1,store-xuhui,,8000,6000,{cut_over}"))

    assert report.created == 1
    opening = opening_of(alice)
    assert opening.amount == Decimal("6000")
    assert opening.growth_points == Decimal("8000")
    assert opening.occurred_at == midnight(cut_over)
    assert opening.reference == "opening-A-1"
    assert opening.channel == store
    assert opening.source == Activity.Source.MIGRATION
    assert opening.import_batch_id == report.batch_id
    assert opening.import_line == 2


def test_reimport_adds_nothing(ladder, store, alice):
    data = openings_file(f"A-1,store-xuhui,Gold,8000,6000,{days_ago(20)}")
    run_import(data)
    history = TierChange.objects.count()

    again = run_import(data)

    assert again.created == 0
    assert again.already_imported == 1
    assert Activity.objects.filter(member=alice).count() == 1
    assert TierChange.objects.count() == history


def test_second_line_for_member_is_duplicate(ladder, store, alice):
    report = run_import(
        openings_file(
            f"A-1,store-xuhui,,100,100,{days_ago(20)}",
            f"A-1,store-xuhui,,200,200,{days_ago(20)}",
        )
    )

    assert report.created == 1
    assert report.duplicates == 1
    assert report.skipped[0].reason == "duplicate of line 2 (same member)"


def test_unknown_member_and_tier_rejected(ladder, store, alice):
    report = run_import(
        openings_file(
            f"NOBODY,store-xuhui,,100,100,{days_ago(5)}",
            f"A-1,store-xuhui,Diamond,100,100,{days_ago(5)}",
        )
    )

    issues = {(issue.line, issue.column): issue for issue in report.rejections}
    assert report.rejected == 2
    assert set(issues) == {(2, "external_id"), (3, "tier")}
    assert issues[(2, "external_id")].value == "NOBODY"
    assert "is not a member in channel store-xuhui" in issues[(2, "external_id")].reason
    assert issues[(3, "tier")].value == "Diamond"
    assert issues[(3, "tier")].reason == (
        "is not a tier of the rules in effect; use one of Bronze, Gold, "
        "Platinum, Silver"
    )
    assert not Activity.objects.exists()


def test_value_checks_reject_lines(ladder, store, alice):
    make_member(store, "A-2")
    make_member(store, "A-3")
    tomorrow = timezone.localdate() + dt.timedelta(days=1)

    report = run_import(
        openings_file(
            f"A-1,store-xuhui,,-5,100,{days_ago(5)}",
            f"A-2,store-xuhui,,100,100,{tomorrow}",
            f"A-3,store-xuhui,,,,{days_ago(5)}",
        )
    )

    issues = {issue.line: issue for issue in report.rejections}
    assert issues[2].column == "growth_value"
    assert issues[2].reason == "is negative, but a total to date cannot be"
    assert issues[3].column == "as_of"
    assert issues[3].reason.startswith("is in the future")
    assert issues[4].column == ""
    assert "nothing to import" in issues[4].reason


def test_chinese_headers(yearly_gold, store, alice):
    data = openings_file(
        f'A-1,store-xuhui,金卡,\uff18\uff10\uff10\uff10,"¥6,000.50",{days_ago(9)}',
        header="会员号,渠道,等级,成长值,累计消费,截止日期",
    )
    Tier.objects.filter(pk=yearly_gold["gold"].pk).update(name="金卡")

    report = run_import(data)

    assert report.created == 1
    opening = opening_of(alice)
    assert opening.growth_points == Decimal("8000")
    assert opening.amount == Decimal("6000.50")
    alice.refresh_from_db()
    assert alice.tier == yearly_gold["gold"]


def test_xlsx_with_number_and_date_cells(ladder, store, alice):
    cut_over = days_ago(12)
    workbook = Workbook()
    sheet = workbook.active
    sheet.append(["会员号", "渠道", "成长值", "累计消费", "截止日期"])
    sheet.append(
        ["A-1", "store-xuhui", 8000, 6000.5, dt.datetime.combine(cut_over, dt.time())]
    )
    buffer = io.BytesIO()
    workbook.save(buffer)

    report = import_openings(buffer.getvalue(), file_name="openings.xlsx")

    assert report.created == 1
    opening = opening_of(alice)
    assert opening.growth_points == Decimal("8000")
    assert opening.amount == Decimal("6000.50")
    assert opening.occurred_at == midnight(cut_over)


def test_cut_over_date_fills_empty_as_of(ladder, store, alice):
    make_member(store, "A-2")
    cut_over = days_ago(3)
    data = openings_file("A-1,store-xuhui,,100,100,", "A-2,store-xuhui,,100,100,")

    without = run_import(data, dry_run=True)
    report = run_import(data, cut_over=cut_over)

    assert without.rejected == 2
    assert {issue.column for issue in without.rejections} == {"as_of"}
    assert report.created == 2
    assert opening_of(alice).occurred_at == midnight(cut_over)


def test_dry_run_saves_nothing(ladder, store, alice):
    report = run_import(
        openings_file(f"A-1,store-xuhui,Gold,100,100,{days_ago(5)}"), dry_run=True
    )

    alice.refresh_from_db()
    assert report.created == 1
    # Gold without reviews drops at once: ¥100 and no orders meet no rule.
    assert report.lines[0].values["tier_result"] == (
        "set to Gold, then Bronze at once: the balances do not meet Gold's rules"
    )
    assert report.lines[0].values["tier_after"] == "Bronze"
    assert report.batch_id is None
    assert not Activity.objects.exists()
    assert alice.tier is None
    assert not ImportBatch.objects.exists()


def test_file_without_value_columns_refused(ladder, store, alice):
    report = run_import(openings_file("A-1,store-xuhui", header="会员号,渠道"))

    assert report.refused is not None
    assert "none of the columns tier, growth_value and spend" in report.refused
    batch = ImportBatch.objects.get()
    assert batch.status == ImportBatch.Status.REFUSED


def test_activity_files_reject_opening_kind(ladder, store, alice):
    data = (
        b"external_id,occurred_at,amount,channel,kind,reference\n"
        b"A-1,2024-02-01 10:00,0,store-xuhui,opening,X-1\n"
    )

    report = import_data(data, "activities", file_name="activities.csv")

    assert "opening" not in kinds_by_label()
    assert report.rejected == 1
    assert report.rejections[0].column == "kind"
    assert not Activity.objects.exists()


def test_event_api_rejects_opening_kind(ladder, store, alice):
    _, token = issue_token(store, "Xuhui tills")
    client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    event = {
        "external_id": "A-1",
        "reference": "R-1",
        "occurred_at": (timezone.now() - dt.timedelta(minutes=5)).isoformat(),
        "amount": "0",
        "kind": "opening",
    }

    response = client.post(reverse("api-events"), event, format="json")

    assert response.status_code == 422
    assert "Unknown activity kind 'opening'" in response.content.decode()
    assert not Activity.objects.exists()


# Opening tiers


@pytest.fixture
def yearly_gold(tiers: dict[str, Tier]) -> dict[str, Tier]:
    """The standard ladder, with Gold held 12 months between reviews."""
    spec = standard_spec(tiers)
    spec.tiers[2].validity = Validity.MONTHS
    spec.tiers[2].validity_months = 12
    publish_spec(spec)
    return tiers


def test_opening_tier_sets_review_date(yearly_gold, store, alice):
    cut_over = days_ago(40).replace(day=1)
    expected_review = midnight(cut_over.replace(year=cut_over.year + 1))

    report = run_import(openings_file(f"A-1,store-xuhui,Gold,,,{cut_over}"))

    alice.refresh_from_db()
    assert alice.tier == yearly_gold["gold"]
    assert alice.tier_since == midnight(cut_over)
    assert alice.review_at == expected_review
    change = TierChange.objects.get(member=alice)
    assert change.reason == TierChange.Reason.OPENING
    assert change.from_tier is None
    assert change.review_at == expected_review
    assert change.explanation["opening"]["note"] == (
        "Opening tier from the previous program"
    )
    assert change.explanation["opening"]["batch"] == report.batch_id
    assert report.lines[0].values["tier_result"] == "set to Gold"


def test_opening_tier_never_lowers(ladder, store, alice):
    bob = make_member(store, "B-1", name="Bob")
    record(bob, store, "purchase", midnight(days_ago(50)), "60000")
    evaluate([bob.pk])
    bob.refresh_from_db()
    assert bob.tier == ladder["platinum"]

    report = run_import(
        openings_file(
            f"B-1,store-xuhui,Silver,100,100,{days_ago(5)}",
            f"A-1,store-xuhui,Silver,100,100,{days_ago(5)}",
        )
    )

    bob.refresh_from_db()
    assert bob.tier == ladder["platinum"]
    assert not TierChange.objects.filter(
        member=bob, reason=TierChange.Reason.OPENING
    ).exists()
    outcomes = {line.line: line.values["tier_result"] for line in report.lines}
    assert outcomes[2] == "kept Platinum, which ranks at or above Silver"
    # Silver has no reviews, and ¥100 does not meet it.
    assert outcomes[3] == (
        "set to Silver, then Bronze at once: the balances do not meet Silver's rules"
    )
    assert ImportedMember.objects.get(member=bob).previous == {}


def test_opening_tier_issues_no_welcome_benefit(yearly_gold, store, alice):
    catalogue = create_catalogue(yearly_gold)

    run_import(openings_file(f"A-1,store-xuhui,Gold,,,{days_ago(10)}"))
    issue_for_tier_changes()

    granted = set(
        Grant.objects.filter(member=alice).values_list("benefit__name", flat=True)
    )
    assert catalogue["discount"].name in granted
    assert catalogue["tote"].name not in granted


# Rollback


def test_rollback_restores_tiers_and_removes_balances(yearly_gold, store, alice):
    carol = make_member(store, "C-1", name="Carol")
    record(carol, store, "purchase", midnight(days_ago(60)), "1500")
    evaluate([alice.pk, carol.pk])
    carol.refresh_from_db()
    alice.refresh_from_db()
    carol_before = (carol.tier_id, carol.tier_since, carol.review_at)
    user = User.objects.create_user("rollbacker", "r@example.com", "pw-12345-x")
    report = run_import(
        openings_file(
            f"A-1,store-xuhui,Gold,500,500,{days_ago(10)}",
            f"C-1,store-xuhui,Gold,,,{days_ago(10)}",
        )
    )
    batch = ImportBatch.objects.get(pk=report.batch_id)

    summary = rollback_batch(batch, user)

    alice.refresh_from_db()
    carol.refresh_from_db()
    assert not Activity.objects.filter(import_batch=batch).exists()
    assert summary["activities_deleted"] == 2
    assert summary["tiers_restored"] == 2
    assert (carol.tier_id, carol.tier_since, carol.review_at) == carol_before
    assert alice.tier == yearly_gold["bronze"]
    undone = TierChange.objects.get(
        member=carol, explanation__opening__rolled_back=True
    )
    assert undone.from_tier == yearly_gold["gold"]
    assert undone.to_tier == yearly_gold["silver"]
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.ROLLED_BACK


def test_rollback_leaves_member_moved_since(yearly_gold, store, alice):
    user = User.objects.create_user("rollbacker", "r@example.com", "pw-12345-x")
    report = run_import(openings_file(f"A-1,store-xuhui,Silver,,,{days_ago(10)}"))
    record(alice, store, "purchase", midnight(days_ago(2)), "60000")
    evaluate([alice.pk])

    summary = rollback_batch(ImportBatch.objects.get(pk=report.batch_id), user)

    alice.refresh_from_db()
    assert summary["conflicts"] == 1
    assert summary["tiers_restored"] == 0
    assert alice.tier == yearly_gold["platinum"]
    assert not TierChange.objects.filter(
        member=alice, explanation__opening__rolled_back=True
    ).exists()


# Explaining and wording


def test_why_lists_opening_balance(ladder, store, alice):
    run_import(openings_file(f"A-1,store-xuhui,,8000,12000,{days_ago(10)}"))
    evaluation = explain_member(alice)

    with translation.override("en"):
        (counted,) = activities_that_counted(alice.pk, evaluation.explanation)

    assert counted.metrics == (
        "net spend (last 365 days)",
        "net spend (lifetime)",
        "growth value (lifetime)",
    )
    assert counted.description == (
        "Opening balance from the previous program: net spend ¥12,000, "
        "growth value 8,000"
    )


def test_opening_reads_as_opening_not_purchase(ladder, store, alice):
    run_import(openings_file(f"A-1,store-xuhui,,0,0,{days_ago(10)}"))
    purchase = record(alice, store, "purchase", midnight(days_ago(2)), "10")
    opening = opening_of(alice)

    assert activity_label(opening, "en") == "Opening balance from the previous program"
    assert describe_activity(opening, "en") == (
        "Opening balance from the previous program"
    )
    assert activity_label(purchase, "en") == purchase.kind.name


# Entry points


def test_command_imports_with_cut_over(ladder, store, alice, tmp_path):
    path = tmp_path / "openings.csv"
    path.write_bytes(openings_file("A-1,store-xuhui,Gold,100,200,"))
    cut_over = days_ago(7)

    call_command(
        "import_opening_balances", str(path), "--dry-run", f"--as-of={cut_over}"
    )
    assert not Activity.objects.exists()
    call_command("import_opening_balances", str(path), f"--as-of={cut_over}")

    assert opening_of(alice).occurred_at == midnight(cut_over)
    with pytest.raises(CommandError, match="is not a date"):
        call_command("import_opening_balances", str(path), "--as-of=31/12/2025")


def test_admin_upload_preview_confirm(
    client,
    staff_user,
    ladder,
    store,
    alice,
    settings,
    tmp_path,
    django_capture_on_commit_callbacks,
):
    settings.MEDIA_ROOT = tmp_path
    client.force_login(staff_user)
    data = openings_file(
        f"A-1,store-xuhui,Gold,8000,6000,{days_ago(5)}",
        f"NOBODY,store-xuhui,Gold,1,1,{days_ago(5)}",
    )
    url = reverse("admin:members_opening_balances")

    form = client.get(url)
    preview = client.post(
        url, {"import_file": SimpleUploadedFile("openings.csv", data)}
    )

    assert form.status_code == 200
    assert preview.status_code == 200
    text = preview.content.decode()
    assert "NOBODY" in text
    assert "is not a member in channel store-xuhui" in text
    assert not Activity.objects.exists()
    batch = ImportBatch.objects.get()
    assert batch.status == ImportBatch.Status.CHECKED
    assert batch.rejected_count == 1
    assert reverse("admin:members_importbatch_issues", args=[batch.pk]) in text
    assert "set to Gold" in text
    assert "<td>Silver</td>" in text  # ¥6,000 without orders drops Gold

    with django_capture_on_commit_callbacks(execute=True):
        confirmed = client.post(
            reverse("admin:members_opening_balances_confirm", args=[batch.pk])
        )

    assert confirmed.status_code == 200
    assert opening_of(alice).amount == Decimal("6000")
    batch.refresh_from_db()
    assert batch.status == ImportBatch.Status.APPLIED
    assert batch.created_count == 1
    assert not batch.upload
    again = client.post(
        reverse("admin:members_opening_balances_confirm", args=[batch.pk])
    )
    assert again.status_code == 302
    assert Activity.objects.count() == 1


def test_admin_shows_rejected_file(client, staff_user, ladder, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    client.force_login(staff_user)
    data = openings_file("A-1,store-xuhui", header="会员号,渠道")

    response = client.post(
        reverse("admin:members_opening_balances"),
        {"import_file": SimpleUploadedFile("openings.csv", data)},
    )

    assert response.status_code == 200
    assert (
        "none of the columns tier, growth_value and spend" in response.content.decode()
    )
    assert not ImportBatch.objects.exists()


def test_admin_needs_import_permission(client, ladder):
    outsider = User.objects.create_user(
        "outsider", "o@example.com", "pw-12345-x", is_staff=True
    )
    client.force_login(outsider)

    response = client.get(reverse("admin:members_opening_balances"))

    assert response.status_code == 403


def test_confirm_refuses_applied_batch(ladder, store, alice):
    report = run_import(openings_file(f"A-1,store-xuhui,,1,1,{days_ago(5)}"))
    batch = ImportBatch.objects.get(pk=report.batch_id)

    with pytest.raises(Exception, match="has status"):
        confirm_openings(batch, None)


# Opening tiers that do not hold, and their rollback


def publish_new_activity_rules(tiers: dict[str, Tier]) -> None:
    """Publish the standard rules again, for new activity only, from now on."""
    publish(
        build(standard_spec(tiers)),
        user=None,
        reason="test set-up",
        policy=RuleVersion.Policy.NEW_ACTIVITY,
        effective_from=timezone.now() - dt.timedelta(minutes=1),
        allow_past=True,
    )


def test_dropped_opening_tier_reported(ladder, store, alice):
    make_member(store, "B-1", name="Bob")
    data = openings_file(
        f"A-1,store-xuhui,Gold,1200,1500,{days_ago(5)}",
        f"B-1,store-xuhui,Silver,0,1500,{days_ago(5)}",
    )

    report = run_import(data)

    alice.refresh_from_db()
    assert alice.tier == ladder["silver"]
    by_line = {line.line: line.values for line in report.lines}
    assert by_line[2]["tier_outcome"] == TIER_DROPPED
    assert by_line[2]["tier_result"] == (
        "set to Gold, then Silver at once: the balances do not meet Gold's rules"
    )
    assert by_line[3]["tier_outcome"] == TIER_SET
    assert tier_outcome_counts(report) == {TIER_DROPPED: 1, TIER_SET: 1}
    assert describe_tier_outcomes(report) == [
        "Opening tiers: 1 set and kept, 1 dropped at once and 0 raised at once "
        "by the evaluation, 0 not set because the member's tier ranks as high "
        "or higher.",
        "Line 2: set to Gold, then Silver at once: the balances do not meet "
        "Gold's rules.",
    ]


def test_admin_report_counts_dropped_tiers(
    client, staff_user, ladder, store, alice, settings, tmp_path
):
    settings.MEDIA_ROOT = tmp_path
    client.force_login(staff_user)
    data = openings_file(f"A-1,store-xuhui,Gold,1200,1500,{days_ago(5)}")

    with translation.override("en"):
        preview = client.post(
            reverse("admin:members_opening_balances"),
            {"import_file": SimpleUploadedFile("openings.csv", data)},
            HTTP_ACCEPT_LANGUAGE="en",
        )

    text = preview.content.decode()
    assert preview.status_code == 200
    assert '<td class="count-tiers-dropped">1</td>' in text
    assert '<td class="count-tiers-set">0</td>' in text
    assert "then Silver at once: the balances do not meet Gold&#x27;s rules" in text


def test_rollback_after_dropped_tier_restores_tier(ladder, store, alice):
    evaluate([alice.pk])
    publish_new_activity_rules(ladder)
    alice.refresh_from_db()
    before = (alice.tier_id, alice.tier_since, alice.review_at)
    user = User.objects.create_user("rollbacker", "r@example.com", "pw-12345-x")
    report = run_import(openings_file(f"A-1,store-xuhui,Gold,1200,1500,{days_ago(5)}"))
    alice.refresh_from_db()
    assert alice.tier == ladder["silver"]

    summary = rollback_batch(ImportBatch.objects.get(pk=report.batch_id), user)

    alice.refresh_from_db()
    assert (alice.tier_id, alice.tier_since, alice.review_at) == before
    assert summary["tiers_restored"] == 1
    assert summary["conflicts"] == 0
    undone = TierChange.objects.get(
        member=alice, explanation__opening__rolled_back=True
    )
    assert undone.from_tier == ladder["silver"]
    assert undone.to_tier == ladder["bronze"]
    assert undone.reason == TierChange.Reason.OPENING


def test_imported_member_keeps_state_after_evaluation(ladder, store, alice):
    evaluate([alice.pk])
    bronze = ladder["bronze"].pk

    report = run_import(openings_file(f"A-1,store-xuhui,Gold,1200,1500,{days_ago(5)}"))

    previous = ImportedMember.objects.get(batch_id=report.batch_id).previous
    assert previous["tier"] == [bronze, ladder["silver"].pk]
