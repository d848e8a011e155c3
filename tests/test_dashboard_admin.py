"""The dashboard on the admin home, its full page and its Excel export."""

from __future__ import annotations

import datetime as dt
import io
import re

import openpyxl
import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from benefits.models import Benefit, Grant, TierPeriod
from members.models import ImportBatch, ImportKind, Member
from tests.conftest import make_member, record
from tiers import dashboard
from tiers.models import TierChange

pytestmark = pytest.mark.django_db

HOME = "/admin/"
FORMULA_FILE_NAME = '=HYPERLINK("http://example.com")'


def staff_client(username: str, codenames: list[str], **flags: bool) -> Client:
    user = User.objects.create_user(
        username, f"{username}@example.com", "pw-12345-x", **flags
    )
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    # English, so Django's own admin text is predictable in assertions.
    client = Client(headers={"accept-language": "en"})
    client.force_login(user)
    return client


@pytest.fixture
def manager() -> Client:
    """Staff who may view members, and so the dashboard."""
    return staff_client("manager", ["view_member"], is_staff=True)


@pytest.fixture
def rule_editor() -> Client:
    """Staff without the member view permission."""
    return staff_client("rules", ["view_ruleversion"], is_staff=True)


@pytest.fixture
def outsider() -> Client:
    """A user who is not staff, although the permission was given."""
    return staff_client("outsider", ["view_member"])


@pytest.fixture
def program(tiers, store) -> dict[str, Member]:
    """Three Gold members, one Silver and one without a tier.

    Gold-1 was promoted this week and redeemed a grant. A failed import has a
    file name that a spreadsheet would run as a formula.
    """
    now = timezone.now()
    members = {}
    for name, tier in [
        ("gold-1", "gold"),
        ("gold-2", "gold"),
        ("gold-3", "gold"),
        ("silver-1", "silver"),
        ("new-1", None),
    ]:
        member = make_member(store, name)
        member.tier = tiers[tier] if tier else None
        member.save()
        members[name] = member

    record(members["gold-1"], store, "purchase", now - dt.timedelta(days=2), "500")
    TierChange.objects.create(
        member=members["gold-1"],
        from_tier=tiers["silver"],
        to_tier=tiers["gold"],
        changed_at=now - dt.timedelta(seconds=1),
        as_of=now,
        reason=TierChange.Reason.PROMOTION,
        explanation={},
    )

    period = TierPeriod.objects.create(
        member=members["gold-1"],
        tier=tiers["gold"],
        starts_at=now - dt.timedelta(days=1),
        ends_at=now + dt.timedelta(days=365),
    )
    Grant.objects.create(
        member=members["gold-1"],
        benefit=Benefit.objects.create(name="Coupon", kind="coupon"),
        tier=tiers["gold"],
        period=period,
        origin=Grant.Origin.ONGOING,
        status=Grant.Status.REDEEMED,
        code="ADMIN-DASH-1",
        created_at=now - dt.timedelta(minutes=4),
        issued_at=now - dt.timedelta(minutes=4),
        redeemed_at=now - dt.timedelta(minutes=3),
    )

    ImportBatch.objects.create(
        kind=ImportKind.ACTIVITIES,
        status=ImportBatch.Status.FAILED,
        file_name=FORMULA_FILE_NAME,
        total_rows=40,
        rejected_count=10,
        message="Database error while writing line 12",
    )
    return members


def table_rows(html: str, caption: str) -> list[list[str]]:
    """Return the body rows of the table with ``caption`` as lists of cell text."""
    match = re.search(
        r"<caption>" + re.escape(caption) + r"</caption>.*?<tbody>(.*?)</tbody>",
        html,
        re.S,
    )
    assert match, f"no table captioned {caption!r}"
    rows = []
    for row in re.findall(r"<tr>(.*?)</tr>", match.group(1), re.S):
        cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
        rows.append([re.sub(r"<[^>]+>", "", cell).strip() for cell in cells])
    return rows


# The admin home


def test_home_shows_dashboard_above_app_list(manager, program):
    response = manager.get(HOME)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Operations dashboard" in html
    assert html.index('class="ops-dashboard"') < html.index('class="app-members')
    assert html.count('<svg class="ops-svg"') == 6
    assert html.count('role="img"') == 6
    assert "/static/css/dashboard.css" in html
    assert "Computed at" in html
    assert reverse("admin-dashboard") in html


def test_home_tables_hold_the_numbers(manager, program):
    html = manager.get(HOME).content.decode()

    assert table_rows(html, "Tiers now") == [
        ["Bronze", "0", "0.0%"],
        ["Silver", "1", "20.0%"],
        ["Gold", "3", "60.0%"],
        ["Platinum", "0", "0.0%"],
        ["No tier yet", "1", "20.0%"],
    ]
    benefits = {row[0]: row[1:] for row in table_rows(html, "Benefits")}
    assert benefits["Gold"] == ["1", "1", "0", "100.0%"]
    assert benefits["Silver"] == ["0", "0", "0", "—"]
    movements = table_rows(html, "Promotions and downgrades")
    assert len(movements) == dashboard.DEFAULT_WEEKS
    # The last week: one automatic promotion and nothing else.
    assert movements[-1][1:] == ["1", "0", "0", "0", "0", "0"]
    churn = {row[0]: row[1:] for row in table_rows(html, "Churn")}
    assert churn["Gold"] == ["3", "2", "66.7%"]
    problems = table_rows(html, "Import problems")
    assert len(problems) == 1
    assert problems[0][1] == FORMULA_FILE_NAME.replace('"', "&quot;")
    batch = ImportBatch.objects.get()
    change_url = reverse("admin:members_importbatch_change", args=[batch.pk])
    assert f'<a href="{change_url}">#{batch.pk}</a>' in html


def test_home_svg_has_titles_for_bars(manager, program):
    html = manager.get(HOME).content.decode()

    assert '<title id="chart-distribution-title">Members per tier now</title>' in html
    assert "<title>Gold: 3 (60.0%)</title>" in html
    assert 'id="chart-churn-desc"' in html


def test_home_without_permission_is_stock(rule_editor, program):
    response = rule_editor.get(HOME)

    assert response.status_code == 200
    html = response.content.decode()
    assert "Operations dashboard" not in html
    assert "ops-svg" not in html
    assert "/static/css/dashboard.css" not in html
    assert "Rule versions" in html


def test_home_needs_staff(outsider, client):
    for visitor in (outsider, client):
        response = visitor.get(HOME)

        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_home_query_count_cold_and_warm(manager, program, django_assert_num_queries):
    # Session, user, the user's and the group permissions, the eight
    # dashboard queries (tiers, distribution, history, movements, benefits,
    # churn, import weeks, problem batches) and the recent actions list.
    with django_assert_num_queries(13):
        manager.get(HOME)
    # A second visit reads the figures from the cache.
    with django_assert_num_queries(5):
        manager.get(HOME)


def test_home_reuses_cached_figures(manager, program, store):
    first = manager.get(HOME).context["dashboard"]
    make_member(store, "joined-later")

    second = manager.get(HOME).context["dashboard"]

    assert second.computed_at == first.computed_at
    assert second.distribution.total == 5


# The full page


def test_dashboard_page_with_range(manager, program):
    response = manager.get(reverse("admin-dashboard"), {"weeks": 4, "churn_days": 7})

    assert response.status_code == 200
    board = response.context["dashboard"]
    assert board.weeks == 4
    assert board.churn_days == 7
    html = response.content.decode()
    assert html.count('<svg class="ops-svg"') == 6
    assert 'name="weeks" value="4"' in html
    assert len(table_rows(html, "Import batches")) == 4
    assert "Members with no activity in 7 days" in html
    assert "export.xlsx?weeks=4&amp;churn_days=7" in html
    # Tables are open on the full page.
    assert '<details class="ops-numbers" open>' in html


def test_dashboard_page_invalid_range_uses_defaults(manager, program):
    response = manager.get(reverse("admin-dashboard"), {"weeks": 0, "churn_days": "x"})

    assert response.status_code == 200
    board = response.context["dashboard"]
    assert board.weeks == dashboard.DEFAULT_WEEKS
    assert board.churn_days == dashboard.DEFAULT_CHURN_DAYS
    html = response.content.decode()
    assert "Correct the range below" in html
    assert "Ensure this value is greater than or equal to 1." in html


def test_dashboard_page_refresh_recomputes(manager, program, store):
    url = reverse("admin-dashboard")
    first = manager.get(url).context["dashboard"]
    make_member(store, "joined-later")

    cached = manager.get(url).context["dashboard"]
    refreshed = manager.get(url, {"refresh": "1"}).context["dashboard"]

    assert cached.distribution.total == first.distribution.total == 5
    assert refreshed.distribution.total == 6
    assert refreshed.computed_at > first.computed_at


def test_dashboard_page_needs_member_permission(rule_editor, outsider, program):
    assert rule_editor.get(reverse("admin-dashboard")).status_code == 403
    response = outsider.get(reverse("admin-dashboard"))
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_superuser_sees_dashboard(program):
    client = staff_client("root", [], is_staff=True, is_superuser=True)

    response = client.get(reverse("admin-dashboard"))

    assert response.status_code == 200


# Excel export


def test_export_has_one_sheet_per_figure(manager, program):
    response = manager.get(
        reverse("admin-dashboard-export"), {"weeks": 4, "churn_days": 30}
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith(
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    today = timezone.localdate().isoformat()
    assert f'filename="dashboard-{today}.xlsx"' in response["Content-Disposition"]
    workbook = openpyxl.load_workbook(io.BytesIO(response.content))
    assert workbook.sheetnames == [
        "Tiers now",
        "Tiers over time",
        "Promotions and downgrades",
        "Benefits",
        "Churn",
        "Import batches",
        "Import problems",
    ]

    tiers_now = list(workbook["Tiers now"].iter_rows(values_only=True))
    assert tiers_now[0] == ("Tier", "Members", "Share (%)")
    assert tiers_now[1:] == [
        ("Bronze", 0, 0),
        ("Silver", 1, 20),
        ("Gold", 3, 60),
        ("Platinum", 0, 0),
        ("No tier yet", 1, 20),
    ]
    gold_members = workbook["Tiers now"].cell(row=4, column=2)
    assert gold_members.data_type == "n"

    churn = {row[0]: row[1:] for row in workbook["Churn"].iter_rows(values_only=True)}
    assert churn["Gold"] == (3, 2, 66.7)

    movements = list(workbook["Promotions and downgrades"].iter_rows(values_only=True))
    assert len(movements) == 1 + 4
    assert movements[-1][1:] == (1, 0, 0, 0, 0, 0)

    imports = list(workbook["Import batches"].iter_rows(values_only=True))
    assert imports[-1][-3:] == (40, 10, 25)


def test_export_quotes_formula_text(manager, program):
    response = manager.get(reverse("admin-dashboard-export"))

    sheet = openpyxl.load_workbook(io.BytesIO(response.content))["Import problems"]
    file_cell = sheet.cell(row=2, column=2)
    assert file_cell.value == FORMULA_FILE_NAME
    assert file_cell.data_type == "s"
    assert file_cell.quotePrefix
    batch_cell = sheet.cell(row=2, column=1)
    assert batch_cell.data_type == "n"


def test_export_rejects_invalid_range(manager, program):
    response = manager.get(reverse("admin-dashboard-export"), {"weeks": 500})

    assert response.status_code == 400
    assert "weeks" in response.content.decode()


def test_export_needs_member_permission(rule_editor, outsider, program):
    assert rule_editor.get(reverse("admin-dashboard-export")).status_code == 403
    assert outsider.get(reverse("admin-dashboard-export")).status_code == 302


def test_export_query_count(manager, program, django_assert_num_queries):
    # Session, user, permissions, then the eight dashboard queries.
    with django_assert_num_queries(12):
        manager.get(reverse("admin-dashboard-export"))
