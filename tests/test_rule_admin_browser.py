"""A rule change from copy to publish, done by a staff user in Debian's chromium."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.utils import timezone
from playwright.sync_api import expect

from tests.conftest import make_member, record
from tiers.evaluation import evaluate
from tiers.models import RuleVersion

DESKTOP = {"width": 1280, "height": 900}
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "pw-for-the-browser-test"

pytestmark = [
    pytest.mark.browser,
    # serialized_rollback restores the activity kinds that a migration
    # creates, because a transactional test flushes every table afterwards.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture
def rule_editor(db) -> User:
    """Staff who edit, simulate and publish rule versions, without superuser."""
    user = User.objects.create_user(
        "rules", "rules@example.com", PASSWORD, is_staff=True
    )
    codenames = ["view_ruleversion", "change_ruleversion", "publish_ruleversion"]
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return user


@pytest.fixture
def members(ladder, store) -> None:
    """Two Silver members (spend 1,500 and 2,500) and one without a tier yet."""
    now = timezone.now()
    for name, spend in [("Li Na", "1500"), ("Wang Fang", "2500")]:
        member = make_member(store, name, name=name)
        record(member, store, "purchase", now - dt.timedelta(days=3), spend)
    evaluate()
    make_member(store, "new", name="Chen Jie")


def test_copy_edit_simulate_publish(live_server, rule_editor, members, chromium):
    ARTIFACTS.mkdir(exist_ok=True)
    context = chromium.new_context(viewport=DESKTOP, locale="en-US")
    page = context.new_page()

    page.goto(f"{live_server.url}/admin/login/?next=/admin/tiers/ruleversion/")
    page.get_by_label("Username").fill("rules")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="1", exact=True).click()

    expect(page.locator("#published-notice")).to_be_visible()
    expect(page.locator("#plain-rules caption", has_text="English")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "rule_admin_published.png", full_page=True)

    page.get_by_role("button", name="Copy to new draft").click()

    expect(page.locator(".messagelist")).to_contain_text(
        "Version 2 is a new draft copied from version 1."
    )
    silver_spend = page.locator(
        "#requirements-group input[name$='-threshold'][value='1000.00']"
    )
    expect(silver_spend).to_have_count(1)
    silver_spend.fill("2000")
    page.get_by_role("button", name="Save and continue editing").click()

    expect(page.locator(".messagelist .success")).to_be_visible()
    expect(
        page.locator("#requirements-group input[name$='-threshold'][value='2000.00']")
    ).to_have_count(1)
    page.screenshot(path=ARTIFACTS / "rule_admin_draft.png", full_page=True)

    page.get_by_role("link", name="Simulate").click()

    # Li Na (1,500) falls to Bronze and Chen Jie gets a first tier. A rule
    # editor is shown the movers' names masked.
    expect(page.locator("#total-moved")).to_have_text("2")
    expect(page.locator("#total-down")).to_have_text("1")
    expect(page.locator("#movers").get_by_text("L***", exact=True)).to_be_visible()
    expect(page.locator("#movers").get_by_text("Li Na")).to_have_count(0)
    page.screenshot(path=ARTIFACTS / "rule_admin_simulation.png", full_page=True)

    page.get_by_role("link", name="Fairness report").click()

    expect(page.get_by_role("heading", name="Draft counts")).to_be_visible()
    page.screenshot(path=ARTIFACTS / "rule_admin_fairness.png", full_page=True)
    page.go_back()

    page.get_by_role("link", name="Publish this version").click()
    page.get_by_label("Reason").fill("Silver needs 2,000 from now on")
    page.get_by_label("Re-evaluate every member now").check()
    page.screenshot(path=ARTIFACTS / "rule_admin_publish.png", full_page=True)
    page.get_by_role("button", name="Publish", exact=True).click()

    expect(page).to_have_url(f"{live_server.url}/admin/tiers/ruleversion/")
    expect(page.locator(".messagelist")).to_contain_text("Version 2 is published")
    version_two = page.locator("#result_list tbody tr").filter(
        has=page.get_by_role("link", name="2", exact=True)
    )
    expect(version_two).to_contain_text("Published")
    page.screenshot(path=ARTIFACTS / "rule_admin_list.png", full_page=True)

    page.get_by_role("link", name="2", exact=True).click()
    page.get_by_role("link", name="Rules history").click()

    history = page.locator("#rules-history")
    expect(history).to_contain_text("Threshold: 1000.00 → 2000.00")
    expect(history).to_contain_text("Published: Silver needs 2,000 from now on")
    page.screenshot(path=ARTIFACTS / "rule_admin_history.png", full_page=True)
    context.close()

    published = RuleVersion.objects.get(number=2)
    assert published.policy == RuleVersion.Policy.REEVALUATE
    assert published.published_by == rule_editor
    assert published.publish_reason == "Silver needs 2,000 from now on"
