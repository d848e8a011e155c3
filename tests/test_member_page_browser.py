"""The member page in Debian's chromium at phone size, driven by Playwright."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.utils import timezone

from benefits.models import Benefit
from members.links import member_page_url
from members.models import Member
from tests.conftest import make_member, publish_spec, record
from tiers.evaluation import evaluate
from tiers.models import Validity
from tiers.rules import Need, TierSpec, VersionSpec, all_of, any_of, at_least

PHONE = {"width": 375, "height": 740}
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    # serialized_rollback restores the activity kinds that a migration
    # creates, because a transactional test flushes every table afterwards.
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture
def silver_member(ladder, store) -> Member:
    """A Silver member with ¥1,240 of ¥5,000 and 2 of 6 orders towards Gold."""
    member = make_member(store, "S-1", name="Zhang Wei")
    member.tier = ladder["silver"]
    member.tier_since = timezone.now() - dt.timedelta(days=60)
    member.save()
    now = timezone.now()
    record(member, store, "purchase", now - dt.timedelta(days=40), "1000")
    record(member, store, "purchase", now - dt.timedelta(days=5), "300")
    record(member, store, "refund", now - dt.timedelta(days=4), "-60")
    record(member, store, "visit", now - dt.timedelta(days=1))
    coupon = Benefit.objects.create(
        name="生日券 Birthday coupon",
        kind="coupon",
        description="¥50 off during your birthday month, once a year.",
    )
    coupon.tiers.add(ladder["silver"])
    return member


def read_bars(page) -> list[dict[str, str]]:
    bars = []
    for bar in page.get_by_role("progressbar").all():
        bars.append(
            {
                "now": bar.get_attribute("aria-valuenow"),
                "max": bar.get_attribute("aria-valuemax"),
                "text": bar.inner_text().strip(),
                "value_text": bar.get_attribute("aria-valuetext"),
                "fill": bar.locator(".bar-fill").bounding_box()["width"],
                "track": bar.locator(".bar-track").bounding_box()["width"],
            }
        )
    return bars


def test_member_page_on_phone(live_server, silver_member, chromium):
    ARTIFACTS.mkdir(exist_ok=True)
    context = chromium.new_context(viewport=PHONE, locale="zh-CN")
    page = context.new_page()
    url = live_server.url + member_page_url(silver_member)

    response = page.goto(url)

    assert response.status == 200
    assert page.locator("html").get_attribute("lang") == "zh-hans"
    assert page.get_by_text("当前等级", exact=True).is_visible()
    # A filled badge shows that the stylesheet loaded.
    badge_colour = page.locator(".current-tier").evaluate(
        "element => getComputedStyle(element).backgroundColor"
    )
    assert badge_colour == "rgb(158, 167, 173)"

    bars = read_bars(page)
    assert len(bars) == 2
    spend, orders = bars
    assert spend["now"] == "24"
    assert spend["max"] == "100"
    assert spend["text"] == "24%"
    assert spend["value_text"] == "已达¥1,240，目标¥5,000"
    assert spend["fill"] == pytest.approx(spend["track"] * 0.24, abs=2)
    assert orders["now"] == "33"
    assert orders["text"] == "33%"
    assert orders["value_text"] == "已达2，目标6"
    assert page.get_by_text("近365天内还差净消费¥3,760").is_visible()
    assert page.get_by_text("近365天内还差4笔订单").is_visible()

    # Nothing may force sideways scrolling on a 375px-wide screen.
    page_width = page.evaluate("document.documentElement.scrollWidth")
    assert page_width <= PHONE["width"]
    page.screenshot(path=ARTIFACTS / "member_page.png", full_page=True)

    page.get_by_role("button", name="English").click()
    page.wait_for_load_state()

    assert page.locator("html").get_attribute("lang") == "en"
    # set_language redirected back to the same signed link.
    assert page.url == url
    assert page.get_by_text("Your tier", exact=True).is_visible()
    english_bars = read_bars(page)
    assert [bar["now"] for bar in english_bars] == ["24", "33"]
    assert english_bars[0]["value_text"] == "¥1,240 of ¥5,000"
    assert page.get_by_text(
        "¥3,760 more net spend within the last 365 days"
    ).is_visible()
    assert page.get_by_text("4 more orders within the last 365 days").is_visible()
    page.screenshot(path=ARTIFACTS / "member_page_en.png", full_page=True)

    page.get_by_role("button", name="简体中文").click()
    page.wait_for_load_state()

    assert page.locator("html").get_attribute("lang") == "zh-hans"
    assert page.get_by_text("当前等级", exact=True).is_visible()
    context.close()


@pytest.fixture
def kept_gold_member(tiers, store) -> Member:
    """A Gold member below Gold's entry rules, kept by its retention rules.

    Platinum, the next tier, takes ¥50,000 in total or two of 20 orders,
    10 visits and 30 active days, so its bars are nested.
    """
    publish_spec(
        VersionSpec(
            tiers=[
                TierSpec(tiers["bronze"]),
                TierSpec(tiers["silver"], all_of(Need("net_spend", 1000))),
                TierSpec(
                    tiers["gold"],
                    all_of(Need("net_spend", 5000), Need("orders", 6)),
                    retention=all_of(Need("net_spend", 2000), Need("visits", 2)),
                ),
                TierSpec(
                    tiers["platinum"],
                    any_of(
                        Need("net_spend", 50000, window="lifetime"),
                        at_least(
                            2,
                            Need("orders", 20),
                            Need("visits", 10),
                            Need("active_days", 30),
                        ),
                    ),
                ),
            ]
        )
    )
    member = make_member(store, "G-1", name="Li Na")
    member.tier = tiers["gold"]
    member.tier_since = timezone.now() - dt.timedelta(days=200)
    member.save()
    now = timezone.now()
    record(member, store, "purchase", now - dt.timedelta(days=20), "2500")
    record(member, store, "visit", now - dt.timedelta(days=9))
    record(member, store, "visit", now - dt.timedelta(days=8))
    return member


def test_nested_rules_and_retention_on_phone(live_server, kept_gold_member, chromium):
    ARTIFACTS.mkdir(exist_ok=True)
    context = chromium.new_context(viewport=PHONE, locale="zh-CN")
    page = context.new_page()
    url = live_server.url + member_page_url(kept_gold_member)

    response = page.goto(url)

    assert response.status == 200
    assert page.get_by_role("heading", name="Gold保级条件").is_visible()
    assert page.get_by_text("最近365天净消费满¥2,000，且到店不少于2次").is_visible()
    assert page.get_by_text("您已满足保级条件，保持Gold等级。").is_visible()
    assert page.get_by_text("满足以下3项中的至少2项：", exact=True).is_visible()
    # Two retention bars, then Platinum's lifetime spend and its three
    # "two of these" bars.
    bars = read_bars(page)
    assert [bar["now"] for bar in bars] == ["100", "100", "5", "5", "20", "10"]
    assert bars[0]["value_text"] == "已达¥2,500，目标¥2,000"
    page_width = page.evaluate("document.documentElement.scrollWidth")
    assert page_width <= PHONE["width"]
    page.screenshot(path=ARTIFACTS / "member_page_nested.png", full_page=True)

    page.get_by_role("button", name="English").click()
    page.wait_for_load_state()

    assert page.get_by_role("heading", name="What keeps Gold").is_visible()
    assert page.get_by_text("Meet at least 2 of these 3:", exact=True).is_visible()
    assert page.get_by_text("You meet these, so you keep Gold.").is_visible()
    page_width = page.evaluate("document.documentElement.scrollWidth")
    assert page_width <= PHONE["width"]
    page.screenshot(path=ARTIFACTS / "member_page_nested_en.png", full_page=True)
    context.close()


def test_invalid_link_in_browser(live_server, db, chromium):
    context = chromium.new_context(viewport=PHONE, locale="en-US")
    page = context.new_page()

    response = page.goto(live_server.url + "/m/not-a-real-link/")

    assert response.status == 404
    assert page.get_by_role("heading", name="This link is not valid").is_visible()
    context.close()


@pytest.fixture
def gold_member_in_grace(tiers, store) -> Member:
    """A Gold member whose yearly review, four or five days ago, found no
    spend, so Gold is held for a 30-day grace period."""
    publish_spec(
        VersionSpec(
            tiers=[
                TierSpec(tiers["bronze"]),
                TierSpec(tiers["silver"], all_of(Need("net_spend", 1000))),
                TierSpec(
                    tiers["gold"],
                    all_of(Need("net_spend", 5000), Need("orders", 6)),
                    retention=all_of(Need("net_spend", 2000)),
                    validity=Validity.MONTHS,
                    validity_months=12,
                    grace_days=30,
                ),
            ]
        )
    )
    member = make_member(store, "R-1", name="Chen Jing")
    reached = timezone.now() - dt.timedelta(days=370)
    for day in range(6):
        record(member, store, "purchase", reached - dt.timedelta(days=day + 1), "1000")
    evaluate([member.pk], as_of=reached)
    return member


def test_grace_note_on_phone(live_server, gold_member_in_grace, chromium):
    ARTIFACTS.mkdir(exist_ok=True)
    context = chromium.new_context(viewport=PHONE, locale="en-US")
    page = context.new_page()

    response = page.goto(live_server.url + member_page_url(gold_member_in_grace))

    assert response.status == 200
    note = page.locator(".tier-hold.in-grace")
    assert note.is_visible()
    assert note.inner_text().startswith("In a grace period until ")
    background = note.evaluate("element => getComputedStyle(element).backgroundColor")
    assert background == "rgb(255, 246, 214)"
    assert page.get_by_role("heading", name="To keep Gold by ").is_visible()
    page_width = page.evaluate("document.documentElement.scrollWidth")
    assert page_width <= PHONE["width"]
    page.screenshot(path=ARTIFACTS / "member_page_grace_en.png", full_page=True)
    context.close()
