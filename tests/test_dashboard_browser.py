"""The dashboard on the admin home in Debian's chromium, driven by Playwright."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from playwright.sync_api import expect

from benefits.models import Benefit, Grant, TierPeriod
from members.models import ImportBatch, ImportKind, Member
from tests.conftest import make_member, record
from tiers.dashboard import backfill_tier_snapshots
from tiers.models import TierChange

DESKTOP = {"width": 1440, "height": 1000}
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "pw-for-the-dashboard-test"
CHART_KEYS = ["distribution", "history", "movements", "benefits", "churn", "imports"]

pytestmark = [
    pytest.mark.browser,
    # serialized_rollback restores the activity kinds that a migration
    # creates, because a transactional test flushes every table afterwards.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture
def manager(db) -> User:
    """Staff who may view members, without superuser."""
    user = User.objects.create_user(
        "manager", "manager@example.com", PASSWORD, is_staff=True
    )
    user.user_permissions.add(Permission.objects.get(codename="view_member"))
    return user


def give_grant(member: Member, number: int, redeemed: bool) -> None:
    now = timezone.now()
    period = TierPeriod.objects.create(
        member=member,
        tier=member.tier,
        starts_at=now - dt.timedelta(days=30),
        ends_at=now + dt.timedelta(days=335),
    )
    Grant.objects.create(
        member=member,
        benefit=Benefit.objects.get_or_create(name="Coupon", kind="coupon")[0],
        tier=member.tier,
        period=period,
        origin=Grant.Origin.ONGOING,
        status=Grant.Status.REDEEMED if redeemed else Grant.Status.ISSUED,
        code=f"BROWSER-{number}",
        created_at=now - dt.timedelta(days=number),
        issued_at=now - dt.timedelta(days=number),
        redeemed_at=now - dt.timedelta(hours=number) if redeemed else None,
    )


@pytest.fixture
def program(tiers, store) -> None:
    """Twenty members who climbed the ladder over eight weeks, some inactive,
    with the daily snapshots rebuilt from their history, a benefit grant for
    each member above Bronze and two imports."""
    now = timezone.now()
    ladder = [tiers["bronze"], tiers["silver"], tiers["gold"], tiers["platinum"]]
    for number in range(20):
        member = make_member(store, f"M{number:03d}")
        level = 0
        joined = now - dt.timedelta(weeks=9, days=number % 5)
        TierChange.objects.create(
            member=member,
            to_tier=ladder[0],
            changed_at=joined,
            as_of=joined,
            reason=TierChange.Reason.INITIAL,
            explanation={},
        )
        for step in range(number % 4):
            moved = now - dt.timedelta(weeks=7 - 2 * step, days=number % 3)
            reason = TierChange.Reason.PROMOTION
            if number == 7 and step == 2:
                reason = TierChange.Reason.OVERRIDE
            TierChange.objects.create(
                member=member,
                from_tier=ladder[level],
                to_tier=ladder[level + 1],
                changed_at=moved,
                as_of=moved,
                reason=reason,
                explanation={},
            )
            level += 1
        member.tier = ladder[level]
        member.save()
        if number % 3:
            record(member, store, "purchase", now - dt.timedelta(days=number), "80")
        if level:
            give_grant(member, number, redeemed=number % 2 == 0)
    backfill_tier_snapshots(70)
    ImportBatch.objects.create(
        kind=ImportKind.ACTIVITIES,
        status=ImportBatch.Status.APPLIED,
        file_name="march.csv",
        total_rows=120,
        rejected_count=6,
    )
    ImportBatch.objects.create(
        kind=ImportKind.MEMBERS,
        status=ImportBatch.Status.REFUSED,
        file_name="members.xlsx",
        message="Missing column: external_id",
    )


def test_admin_home_draws_the_charts(live_server, manager, program, chromium):
    ARTIFACTS.mkdir(exist_ok=True)
    context = chromium.new_context(viewport=DESKTOP, locale="en-US")
    page = context.new_page()

    page.goto(f"{live_server.url}/admin/login/?next=/admin/")
    page.get_by_label("Username").fill("manager")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    expect(page.get_by_role("heading", name="Operations dashboard")).to_be_visible()
    for key in CHART_KEYS:
        expect(page.locator(f"#chart-{key} svg.ops-svg")).to_be_visible()
    # The stylesheet loaded: the home is wider than the stock 600px.
    content_width = page.locator("#content").bounding_box()["width"]
    assert content_width > 700

    distribution = page.get_by_role("img", name="Members per tier now")
    expect(distribution).to_be_visible()
    bars = page.locator("#chart-distribution rect.bar")
    expect(bars).to_have_count(4)
    widths = [bars.nth(index).bounding_box()["width"] for index in range(4)]
    # Five members in each tier: the bars are equally long and not empty.
    assert min(widths) > 20
    assert max(widths) - min(widths) < 1
    expect(page.locator("#chart-history polyline")).to_have_count(4)
    expect(page.locator("#chart-movements rect.bar").first).to_be_visible()
    gold_title = page.locator("#chart-distribution rect.bar title").nth(2)
    assert gold_title.text_content() == "Gold: 5 (25.0%)"

    numbers = page.locator("#chart-distribution .ops-numbers")
    expect(numbers.locator("table")).to_be_hidden()
    numbers.locator("summary").click()
    expect(numbers.locator("table")).to_be_visible()
    expect(numbers.locator("tbody tr").nth(2)).to_contain_text("Gold")

    problems = page.locator(".ops-problems")
    expect(problems).to_contain_text("members.xlsx")
    expect(page.locator("#content-main .app-members")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "dashboard_admin_home.png", full_page=True)

    page.get_by_role("link", name="Open the full dashboard").click()
    page.get_by_role("spinbutton", name="Weeks").fill("8")
    page.get_by_role("button", name="Show").click()

    expect(page.get_by_role("heading", name="Operations dashboard")).to_be_visible()
    expect(page.locator("#chart-movements rect.bar").first).to_be_visible()
    expect(page.locator("#chart-imports table tbody tr")).to_have_count(8)
    page.screenshot(path=ARTIFACTS / "dashboard_page.png", full_page=True)
    context.close()
