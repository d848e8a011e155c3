"""The member page behind a signed link, and the link itself.

Personas: Alice is a Silver member with ¥1,240 of net spend from two orders,
Bob is another member whose data must never show on Alice's page.
"""

from __future__ import annotations

import datetime as dt
import re
import time
import types
from contextlib import contextmanager
from unittest import mock

import pytest
from django.core import signing
from django.urls import reverse
from django.utils import timezone, translation

from benefits.models import Benefit
from members import links, views
from members.links import (
    ExpiredMemberLink,
    InvalidMemberLink,
    member_from_token,
    member_page_url,
    member_token,
)
from members.models import Channel, Member
from tests.conftest import (
    SHANGHAI,
    local,
    make_member,
    publish_spec,
    record,
    standard_spec,
)
from tiers.evaluation import evaluate
from tiers.formatting import format_date
from tiers.models import ReviewWarning, Tier, Validity
from tiers.progress import last_day_held, member_progress
from tiers.rules import Need, TierSpec, VersionSpec, all_of, any_of
from tiers.warnings import record_review_warnings

DAY = 24 * 60 * 60


@contextmanager
def signing_clock(days_later: float):
    """Move the clock that django.core.signing reads ``days_later`` days ahead."""
    # Only the module's own reference to `time` is replaced, so the test
    # runner and the rest of Django keep the real clock.
    moved = types.SimpleNamespace(time=lambda: time.time() + days_later * DAY)
    with mock.patch.object(signing, "time", moved):
        yield


@pytest.fixture
def alice(ladder, store) -> Member:
    member = make_member(store, "A-1", name="Alice Wang")
    member.tier = ladder["silver"]
    member.tier_since = timezone.now() - dt.timedelta(days=40)
    member.save()
    now = timezone.now()
    record(member, store, "purchase", now - dt.timedelta(days=30), "1000")
    record(member, store, "purchase", now - dt.timedelta(days=3), "300")
    record(member, store, "refund", now - dt.timedelta(days=2), "-60")
    return member


@pytest.fixture
def bob(ladder) -> Member:
    shop = Channel.objects.create(code="bobs-shop", name="Harbour outlet")
    member = make_member(shop, "B-1", name="Bob Li")
    member.tier = ladder["gold"]
    member.save()
    record(member, shop, "purchase", timezone.now() - dt.timedelta(days=1), "7777")
    return member


@pytest.fixture
def benefits(ladder) -> dict[str, Benefit]:
    birthday = Benefit.objects.create(
        name="Birthday coupon", kind="coupon", description="¥50 off in your month."
    )
    birthday.tiers.add(ladder["silver"], ladder["gold"])
    lounge = Benefit.objects.create(name="Gold lounge", kind="service")
    lounge.tiers.add(ladder["gold"])
    return {"birthday": birthday, "lounge": lounge}


def progressbars(html: str) -> list[dict[str, str]]:
    """Return the aria attributes of every role="progressbar" element."""
    bars = []
    for tag in re.findall(r'<div class="bar" role="progressbar"[^>]*>', html):
        bars.append(dict(re.findall(r'(aria-[a-z]+)="([^"]*)"', tag)))
    return bars


# The link


def test_link_round_trip(alice):
    url = member_page_url(alice)
    token = member_token(alice)

    assert url.startswith("/m/")
    assert url.endswith("/")
    assert member_from_token(token) == alice


def test_link_carries_public_id_not_pk(alice):
    payload = member_token(alice).split(":")[0]

    assert payload == alice.public_id.hex
    assert payload != str(alice.pk)


def test_link_valid_until_max_age(alice, settings):
    settings.CRM_MEMBER_LINK_MAX_AGE_DAYS = 30
    token = member_token(alice)

    with signing_clock(days_later=29.9):
        assert member_from_token(token) == alice
    with signing_clock(days_later=30.1), pytest.raises(ExpiredMemberLink):
        member_from_token(token)


def test_link_max_age_from_settings(alice, settings):
    settings.CRM_MEMBER_LINK_MAX_AGE_DAYS = 7
    token = member_token(alice)

    with signing_clock(days_later=8), pytest.raises(ExpiredMemberLink):
        member_from_token(token)


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a:b:c", "::", "x" * 500, "%00", "1"],
)
def test_link_garbled_tokens(db, token):
    with pytest.raises(InvalidMemberLink):
        member_from_token(token)


def test_link_edited_to_other_member(alice, bob):
    payload, timestamp, signature = member_token(alice).split(":")
    edited = f"{bob.public_id.hex}:{timestamp}:{signature}"

    with pytest.raises(InvalidMemberLink):
        member_from_token(edited)


def test_link_edited_timestamp(alice):
    payload, timestamp, signature = member_token(alice).split(":")
    later = signing.b62_encode(signing.b62_decode(timestamp) + DAY * 365)

    with pytest.raises(InvalidMemberLink):
        member_from_token(f"{payload}:{later}:{signature}")


def test_link_forged_after_expiry_is_invalid(alice):
    payload, timestamp, _ = member_token(alice).split(":")

    # An old, unsigned token is rejected as invalid, not as expired.
    with signing_clock(days_later=90), pytest.raises(InvalidMemberLink):
        member_from_token(f"{payload}:{timestamp}:{'A' * 43}")


def test_link_other_salt_rejected(alice):
    other_use = signing.TimestampSigner(salt="some.other.feature")

    with pytest.raises(InvalidMemberLink):
        member_from_token(other_use.sign(alice.public_id.hex))


def test_link_signed_non_uuid_rejected(db):
    token = signing.TimestampSigner(salt=links.SALT).sign("42")

    with pytest.raises(InvalidMemberLink, match="not a UUID"):
        member_from_token(token)


def test_link_revoked_by_new_public_id(alice):
    token = member_token(alice)
    Member.objects.filter(pk=alice.pk).update(
        public_id="00000000-0000-4000-8000-0000000000a1"
    )

    with pytest.raises(InvalidMemberLink, match="revoked"):
        member_from_token(token)


# The page


def test_page_shows_tier_and_bars(client, alice):
    response = client.get(member_page_url(alice), HTTP_ACCEPT_LANGUAGE="en")

    assert response.status_code == 200
    html = response.content.decode()
    assert "Hello, Alice Wang" in html
    assert "Silver" in html
    assert "--badge-bg: #9ea7ad" in html
    assert "Gold" in html
    assert "To reach Gold, meet all of these:" in html
    assert (
        "net spend of at least ¥5,000 and at least 6 orders in the last 365 days"
        in html
    )
    assert "¥1,240 / ¥5,000" in html
    assert "¥3,760 more net spend within the last 365 days" in html
    assert "4 more orders within the last 365 days" in html
    assert "What keeps" not in html

    bars = progressbars(html)
    assert len(bars) == 2
    assert bars[0]["aria-valuenow"] == "24"
    assert bars[0]["aria-valuemin"] == "0"
    assert bars[0]["aria-valuemax"] == "100"
    assert bars[0]["aria-valuetext"] == "¥1,240 of ¥5,000"
    assert bars[1]["aria-valuenow"] == "33"
    assert bars[1]["aria-valuetext"] == "2 of 6"


def test_page_chinese_by_default(client, alice):
    response = client.get(member_page_url(alice))

    html = response.content.decode()
    assert '<html lang="zh-hans">' in html
    assert "当前等级" in html
    assert "近365天内还差净消费¥3,760" in html
    assert "同时满足以下全部条件即可升级为Gold：" in html
    assert "最近365天净消费满¥5,000，且订单不少于6笔" in html
    assert response["Content-Language"] == "zh-hans"


def test_page_honours_accept_language(client, alice):
    chinese = client.get(member_page_url(alice), HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9")
    english = client.get(member_page_url(alice), HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.8")

    assert "当前等级" in chinese.content.decode()
    assert "Your tier" in english.content.decode()
    assert english["Content-Language"] == "en"


def test_page_language_switch(client, alice):
    url = member_page_url(alice)
    page = client.get(url).content.decode()
    assert f'<input type="hidden" name="next" value="{url}">' in page
    assert 'action="/i18n/setlang/"' in page

    switched = client.post(reverse("set_language"), {"language": "en", "next": url})

    assert switched.status_code == 302
    assert switched["Location"] == url
    english = client.get(url).content.decode()
    assert '<html lang="en">' in english
    assert "Your tier" in english

    client.post(reverse("set_language"), {"language": "zh-hans", "next": url})
    assert "当前等级" in client.get(url).content.decode()


def test_page_benefits_of_current_tier(client, alice, benefits):
    html = client.get(member_page_url(alice)).content.decode()

    assert "Birthday coupon" in html
    assert "¥50 off in your month." in html
    assert "Gold lounge" not in html


def test_page_without_benefits(client, alice):
    html = client.get(
        member_page_url(alice), HTTP_ACCEPT_LANGUAGE="en"
    ).content.decode()

    assert "Your tier has no benefits yet." in html


def test_page_member_without_tier(client, ladder, store, benefits):
    newcomer = make_member(store, "N-1", name="New Member")
    untiered = Benefit.objects.create(name="Tierless perk", kind="gift")

    html = client.get(
        member_page_url(newcomer), HTTP_ACCEPT_LANGUAGE="en"
    ).content.decode()

    assert "Your tier has not been set yet." in html
    assert "To reach Silver:" in html
    assert untiered.name not in html
    assert "Birthday coupon" not in html


def test_page_top_tier(client, ladder, store):
    top = make_member(store, "P-1", name="Top Member")
    top.tier = ladder["platinum"]
    top.save()

    response = client.get(member_page_url(top), HTTP_ACCEPT_LANGUAGE="en")

    html = response.content.decode()
    assert "You have reached the top tier." in html
    assert progressbars(html) == []


def test_page_ten_newest_activities(client, alice, store):
    base = timezone.now() - dt.timedelta(days=200)
    for day in range(12):
        record(alice, store, "visit", base + dt.timedelta(days=day), "0", f"V-{day}")

    response = client.get(member_page_url(alice))

    rows = response.context["activities"]
    assert len(rows) == 10
    assert [row.kind for row in rows[:3]] == ["Refund", "Purchase", "Purchase"]
    assert rows[2].amount_text == "¥1,000"
    assert rows[0].amount_text == "-¥60"
    assert rows[3].amount_text == ""
    assert rows[0].channel == "Xuhui store"


def test_page_activity_date_in_program_zone(client, alice, store):
    local_day = timezone.localdate(timezone.now(), SHANGHAI) - dt.timedelta(days=1)
    # 00:30 in Shanghai is 16:30 UTC on the day before.
    just_after_midnight = dt.datetime.combine(local_day, dt.time(0, 30), SHANGHAI)
    record(alice, store, "purchase", just_after_midnight, "88")

    response = client.get(member_page_url(alice), HTTP_ACCEPT_LANGUAGE="en")

    (row,) = [r for r in response.context["activities"] if r.amount_text == "¥88"]
    assert row.date_text == f"{local_day.day} {local_day:%b %Y}"


def test_page_data_notice_when_set(client, alice, settings):
    settings.CRM_DATA_NOTICE = "Demo data, shifted to the present."
    with_notice = client.get(member_page_url(alice)).content.decode()

    settings.CRM_DATA_NOTICE = ""
    without_notice = client.get(member_page_url(alice)).content.decode()

    assert "Demo data, shifted to the present." in with_notice
    assert 'class="notice"' not in without_notice


def test_page_does_not_leak_other_members(client, alice, bob):
    html = client.get(member_page_url(alice)).content.decode()

    assert "Bob Li" not in html
    assert "Harbour outlet" not in html
    assert "7,777" not in html
    assert str(bob.public_id.hex) not in html


def test_page_no_store_and_noindex(client, alice):
    response = client.get(member_page_url(alice))

    assert "no-store" in response["Cache-Control"]
    assert "private" in response["Cache-Control"]
    assert response["X-Robots-Tag"] == "noindex, nofollow"


def test_page_rejects_post(client, alice):
    response = client.post(member_page_url(alice))

    assert response.status_code == 405


# Every page view after the first reads the published rules from the cache,
# so the counts below are taken on the second view. The three queries:
# - the member joined with its tier,
# - one UNION ALL of the page's rows. These are the active overrides, the
#   grants, the tier's benefit links, pools and pool options, and every
#   benefit these name. The current tier period, recent activities with their
#   channels and kinds, recent in-app messages and the review warning of a
#   reviewed tier come with them,
# - one aggregate for the metrics of every requirement and the pace windows.
PAGE_QUERIES = 3


def test_page_query_count_is_flat(
    client, alice, store, benefits, ladder, django_assert_num_queries
):
    url = member_page_url(alice)
    client.get(url)

    with django_assert_num_queries(PAGE_QUERIES):
        client.get(url)

    for number in range(25):
        record(alice, store, "purchase", timezone.now(), "10", f"MORE-{number}")
    for number in range(6):
        perk = Benefit.objects.create(name=f"Perk {number}", kind="gift")
        perk.tiers.add(ladder["silver"])

    with django_assert_num_queries(PAGE_QUERIES):
        response = client.get(url)
    assert len(response.context["activities"]) == 10
    assert len(response.context["benefits"]) == 7


# Nested rules and retention


@pytest.fixture
def nested_rules(tiers) -> dict[str, Tier]:
    """Gold by spending or by growth value, kept with ¥2,000 and 2 visits."""
    spending = all_of(Need("net_spend", 5000), Need("orders", 6))
    publish_spec(
        VersionSpec(
            tiers=[
                TierSpec(tiers["bronze"]),
                TierSpec(tiers["silver"], all_of(Need("net_spend", 1000))),
                TierSpec(
                    tiers["gold"],
                    any_of(spending, Need("growth_value", 8000, window="lifetime")),
                    retention=all_of(Need("net_spend", 2000), Need("visits", 2)),
                ),
                TierSpec(
                    tiers["platinum"],
                    all_of(Need("net_spend", 50000, window="lifetime")),
                ),
            ]
        )
    )
    return tiers


@pytest.fixture
def carol(nested_rules, store) -> Member:
    """A Silver member with ¥1,300 from two orders, on her way to Gold."""
    member = make_member(store, "C-1", name="Carol Zhou")
    member.tier = nested_rules["silver"]
    member.save()
    now = timezone.now()
    record(member, store, "purchase", now - dt.timedelta(days=20), "1000")
    record(member, store, "purchase", now - dt.timedelta(days=2), "300")
    return member


@pytest.fixture
def dan(nested_rules, store) -> Member:
    """A Gold member below Gold's entry rules who meets its retention rules."""
    member = make_member(store, "D-1", name="Dan Wu")
    member.tier = nested_rules["gold"]
    member.save()
    now = timezone.now()
    record(member, store, "purchase", now - dt.timedelta(days=10), "2500")
    record(member, store, "visit", now - dt.timedelta(days=9))
    record(member, store, "visit", now - dt.timedelta(days=8))
    return member


def test_page_nested_rule_bars(client, carol):
    html = client.get(
        member_page_url(carol), HTTP_ACCEPT_LANGUAGE="en"
    ).content.decode()

    assert "To reach Gold, meet any one of these:" in html
    assert (
        "(net spend of at least ¥5,000 and at least 6 orders in the last 365 days)"
        " or growth value of at least 8,000 in total"
    ) in html
    assert "Meet all of these:" in html
    assert '<li class="or" aria-hidden="true">or</li>' in html
    bars = progressbars(html)
    assert [bar["aria-valuenow"] for bar in bars] == ["26", "33", "0"]
    assert bars[2]["aria-valuetext"] == "0 of 8,000"


def test_page_nested_rule_in_chinese(client, carol):
    html = client.get(member_page_url(carol)).content.decode()

    assert "满足以下任一条件即可升级为Gold：" in html
    assert "(最近365天净消费满¥5,000且订单不少于6笔)或累计成长值满8,000" in html
    assert "同时满足以下全部条件：" in html


def test_page_no_retention_without_rules(client, carol):
    html = client.get(
        member_page_url(carol), HTTP_ACCEPT_LANGUAGE="en"
    ).content.decode()

    # Silver has no retention rules of its own.
    assert "What keeps" not in html
    assert "retention-card" not in html


def test_page_retention_of_current_tier(client, dan):
    html = client.get(member_page_url(dan), HTTP_ACCEPT_LANGUAGE="en").content.decode()

    assert "What keeps Gold" in html
    assert (
        "net spend of at least ¥2,000 and at least 2 visits in the last 365 days"
        in html
    )
    assert "You meet these, so you keep Gold." in html
    # Two retention bars, then Platinum's one.
    bars = progressbars(html)
    assert [bar["aria-valuetext"] for bar in bars] == [
        "¥2,500 of ¥2,000",
        "2 of 2",
        "¥2,500 of ¥50,000",
    ]
    ids = re.findall(r' id="([^"]+)"', html)
    assert len(ids) == len(set(ids))


def test_page_retention_in_chinese(client, dan):
    html = client.get(member_page_url(dan)).content.decode()

    assert "Gold保级条件" in html
    assert "最近365天净消费满¥2,000，且到店不少于2次" in html
    assert "您已满足保级条件，保持Gold等级。" in html


def test_page_retention_not_met(client, dan, store):
    record(dan, store, "refund", timezone.now() - dt.timedelta(days=1), "-1000")

    html = client.get(member_page_url(dan), HTTP_ACCEPT_LANGUAGE="en").content.decode()

    assert "Not met yet. Meet these by the next evaluation to keep Gold." in html
    assert progressbars(html)[0]["aria-valuenow"] == "75"


def test_page_retention_query_count(client, dan, django_assert_num_queries):
    # The retention check reuses the cached version and the metrics aggregate.
    client.get(member_page_url(dan))

    with django_assert_num_queries(PAGE_QUERIES):
        client.get(member_page_url(dan))


# Links that do not work


def test_forged_token_404(client, db):
    response = client.get("/m/forged-token/", HTTP_ACCEPT_LANGUAGE="en")

    assert response.status_code == 404
    assert "This link is not valid" in response.content.decode()
    assert "no-store" in response["Cache-Control"]


def test_forged_token_404_in_chinese(client, db):
    response = client.get("/m/forged-token/")

    assert response.status_code == 404
    assert "链接无效" in response.content.decode()


def test_edited_token_404(client, alice, bob):
    payload, timestamp, signature = member_token(alice).split(":")
    edited_member = f"{bob.public_id.hex}:{timestamp}:{signature}"
    last = "B" if signature[-1] != "B" else "C"
    edited_signature = f"{payload}:{timestamp}:{signature[:-1]}{last}"

    for token in (edited_member, edited_signature, f"{payload}:{timestamp}"):
        response = client.get(f"/m/{token}/", HTTP_ACCEPT_LANGUAGE="en")
        html = response.content.decode()
        assert response.status_code == 404, token
        assert "This link is not valid" in html
        assert "Bob Li" not in html
        assert "Alice Wang" not in html


def test_expired_token_410(client, alice, settings):
    settings.CRM_MEMBER_LINK_MAX_AGE_DAYS = 30
    url = member_page_url(alice)

    with signing_clock(days_later=31):
        response = client.get(url, HTTP_ACCEPT_LANGUAGE="en")

    html = response.content.decode()
    assert response.status_code == 410
    assert "This link has expired; ask the store for a new one." in html
    assert "work for 30 days" in html
    assert "Alice Wang" not in html
    assert "no-store" in response["Cache-Control"]


def test_expired_token_410_in_chinese(client, alice):
    url = member_page_url(alice)

    with signing_clock(days_later=400):
        response = client.get(url)

    assert response.status_code == 410
    assert "链接已过期，请向门店索取新链接。" in response.content.decode()


def test_deleted_member_link_404(client, ladder, store):
    deleted_member = make_member(store, "G-1", name="Deleted Member")
    url = member_page_url(deleted_member)
    deleted_member.identities.all().delete()
    deleted_member.delete()

    response = client.get(url)

    assert response.status_code == 404


def test_money_amounts_use_currency_setting(client, alice, settings):
    settings.CRM_CURRENCY = "USD"

    html = client.get(
        member_page_url(alice), HTTP_ACCEPT_LANGUAGE="en"
    ).content.decode()

    assert "$1,240 / $5,000" in html
    assert "¥" not in html


# Validity, reviews and grace


@pytest.fixture
def reviewed_rules(tiers) -> dict[str, Tier]:
    """Gold lasts 12 months from reaching it, then has a 30-day grace period,
    and is kept at review with ¥2,000 of net spend in 365 days."""
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
                TierSpec(
                    tiers["platinum"],
                    all_of(Need("net_spend", 50000, window="lifetime")),
                ),
            ]
        )
    )
    return tiers


@pytest.fixture
def erin(reviewed_rules, store) -> Member:
    """Gold from noon on 31 January 2024 with six orders of ¥1,000, so her
    review is at noon on 31 January 2025."""
    member = make_member(store, "E-1", name="Erin Xu")
    for day in range(26, 32):
        record(member, store, "purchase", local(2024, 1, day), "1000")
    evaluate([member.pk], as_of=local(2024, 1, 31, 12))
    member.refresh_from_db()
    assert member.tier == reviewed_rules["gold"]
    assert member.review_at == local(2025, 1, 31, 12)
    return member


def page_as_of(
    client, monkeypatch, member: Member, as_of: dt.datetime, language: str = "en"
) -> str:
    """Return the member page that the view renders as of ``as_of``."""
    monkeypatch.setattr(
        views,
        "member_progress",
        lambda shown, _as_of, **options: member_progress(shown, as_of, **options),
    )
    response = client.get(member_page_url(member), HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 200
    return response.content.decode()


def test_page_validity_of_reviewed_tier(client, monkeypatch, erin):
    html = page_as_of(client, monkeypatch, erin, local(2024, 6, 1))

    assert '<p class="tier-hold">Valid until 31 Jan 2025; reviewed then</p>' in html
    # The review falls in a later year than the page's date, so the heading
    # shows its year.
    assert "To keep Gold at the review on 31 Jan 2025" in html
    assert "What keeps Gold" not in html
    assert "You meet these, so you keep Gold." in html


def test_page_validity_in_chinese(client, monkeypatch, erin):
    html = page_as_of(client, monkeypatch, erin, local(2024, 6, 1), "zh-hans")

    assert "有效期至2025年1月31日，届时复核" in html
    assert "Gold保级条件（2025年1月31日复核）" in html


def test_page_review_heading_in_review_year(client, monkeypatch, erin):
    english = page_as_of(client, monkeypatch, erin, local(2025, 1, 10))
    chinese = page_as_of(client, monkeypatch, erin, local(2025, 1, 10), "zh-hans")

    assert "To keep Gold at the review on 31 January" in english
    assert "Valid until 31 Jan 2025; reviewed then" in english
    assert "Gold保级条件（1月31日复核）" in chinese


def test_page_unmet_retention_waits_for_review(client, monkeypatch, erin, store):
    record(erin, store, "refund", local(2024, 3, 1), "-5000")

    english = page_as_of(client, monkeypatch, erin, local(2024, 6, 1))
    chinese = page_as_of(client, monkeypatch, erin, local(2024, 6, 1), "zh-hans")

    assert "Valid until 31 Jan 2025; reviewed then" in english
    assert "Not met yet. Meet these by 31 Jan 2025 to keep Gold." in english
    assert "by the next evaluation" not in english
    assert "尚未满足。请在2025年1月31日前达成以下条件，以保持Gold等级。" in chinese


def test_page_renewed_hold_shows_next_review(client, monkeypatch, erin, store):
    for day in range(1, 7):
        record(erin, store, "purchase", local(2025, 1, day), "1000")

    english = page_as_of(client, monkeypatch, erin, local(2025, 2, 5))
    chinese = page_as_of(client, monkeypatch, erin, local(2025, 2, 5), "zh-hans")

    # No review job ran, so the page shows what the renewal would store.
    assert "Valid until 31 Jan 2026; reviewed then" in english
    assert "有效期至2026年1月31日，届时复核" in chinese


def test_page_grace_period(client, monkeypatch, erin):
    # The review at noon on 31 January 2025 found no spend in its window.
    english = page_as_of(client, monkeypatch, erin, local(2025, 2, 5))
    chinese = page_as_of(client, monkeypatch, erin, local(2025, 2, 5), "zh-hans")

    assert (
        '<p class="tier-hold in-grace">In a grace period until 2 Mar 2025. '
        "Meet the requirements to keep Gold by then.</p>"
    ) in english
    assert "Valid until" not in english
    assert "To keep Gold by 2 March" in english
    assert "Not met yet. Meet these by 2 March to keep Gold." in english
    assert "宽限期至2025年3月2日，请在此之前达成保级条件，以保持Gold等级。" in chinese
    assert "Gold保级条件（3月2日前达成）" in chinese


def test_page_grace_stored_by_review_job(client, monkeypatch, erin):
    evaluate([erin.pk], as_of=local(2025, 2, 1))
    erin.refresh_from_db()
    assert erin.grace_until == local(2025, 3, 2, 12)

    html = page_as_of(client, monkeypatch, erin, local(2025, 2, 20))

    assert "In a grace period until 2 Mar 2025." in html


def test_page_after_grace_shows_no_hold(client, monkeypatch, erin):
    html = page_as_of(client, monkeypatch, erin, local(2025, 3, 3))

    # The drop is due, so the next evaluation settles the tier.
    assert "tier-hold" not in html
    assert "What keeps Gold" in html


def test_midnight_review_reads_day_before(tiers, store):
    spec = standard_spec(tiers)
    spec.tiers[2].validity = Validity.CALENDAR_YEAR
    publish_spec(spec)
    member = make_member(store, "Y-1")
    for day in range(1, 7):
        record(member, store, "purchase", local(2024, 3, day), "1000")
    evaluate([member.pk], as_of=local(2024, 3, 10))
    member = Member.objects.select_related("tier").get(pk=member.pk)
    assert member.review_at == local(2025, 1, 1)

    with translation.override("en"):
        progress = member_progress(member, local(2024, 6, 1))

    assert progress.hold is not None
    assert progress.hold.text == "Valid until 31 Dec 2024; reviewed then"


def test_page_no_validity_for_continuous_tier(client, alice):
    english = client.get(
        member_page_url(alice), HTTP_ACCEPT_LANGUAGE="en"
    ).content.decode()
    chinese = client.get(member_page_url(alice)).content.decode()

    assert "tier-hold" not in english
    assert "Valid until" not in english
    assert "有效期至" not in chinese


def test_page_validity_as_of_now(client, reviewed_rules, store):
    """The view itself, without a moved clock, shows the stored review date."""
    member = make_member(store, "F-1", name="Fang Liu")
    reached = timezone.now() - dt.timedelta(days=10)
    for day in range(6):
        record(
            member, store, "purchase", reached - dt.timedelta(days=day, hours=1), "1000"
        )
    evaluate([member.pk], as_of=reached)
    member.refresh_from_db()
    with translation.override("en"):
        review_day = format_date(last_day_held(member.review_at))

    html = client.get(
        member_page_url(member), HTTP_ACCEPT_LANGUAGE="en"
    ).content.decode()

    assert f"Valid until {review_day}; reviewed then" in html


def test_page_reviewed_tier_query_count(
    client, monkeypatch, erin, django_assert_num_queries
):
    monkeypatch.setattr(
        views,
        "member_progress",
        lambda shown, _as_of, **options: member_progress(
            shown, local(2025, 2, 5), **options
        ),
    )

    client.get(member_page_url(erin))

    # The three of PAGE_QUERIES and the metrics aggregate as of the review
    # date: Erin's review is due, and a due review is judged on that date's
    # metrics. The review and grace dates come with the member and the
    # evaluation.
    with django_assert_num_queries(PAGE_QUERIES + 1):
        response = client.get(member_page_url(erin))

    assert response.context["progress"].hold.in_grace


# Review warnings


@pytest.fixture
def erin_at_risk(erin, store) -> Member:
    """Erin after a ¥4,500 refund, ¥500 short of Gold's ¥2,000 retention
    rule, warned on 10 January 2025 about her review on 31 January."""
    record(erin, store, "refund", local(2024, 3, 1), "-4500")
    created = record_review_warnings(local(2025, 1, 10), days_ahead=30)
    assert created == 1
    return erin


def test_page_shows_review_warning(client, monkeypatch, erin_at_risk):
    english = page_as_of(client, monkeypatch, erin_at_risk, local(2025, 1, 10))
    chinese = page_as_of(
        client, monkeypatch, erin_at_risk, local(2025, 1, 10), "zh-hans"
    )

    assert (
        '<p class="card review-warning" role="status">'
        "Review on 31 January: ¥500 more net spend keeps Gold</p>"
    ) in english
    assert "1月31日复核：还差净消费¥500，补足即可保级Gold" in chinese


def test_page_warning_before_retention_card(client, monkeypatch, erin_at_risk):
    html = page_as_of(client, monkeypatch, erin_at_risk, local(2025, 1, 10))

    warning_at = html.index('class="card review-warning"')
    tier_card_at = html.index('class="card tier-card"')
    retention_card_at = html.index('class="card retention-card"')
    assert tier_card_at < warning_at < retention_card_at


def test_page_no_warning_without_one(client, monkeypatch, erin):
    html = page_as_of(client, monkeypatch, erin, local(2025, 1, 10))

    assert "review-warning" not in html


def test_page_ignores_warning_for_other_review(client, monkeypatch, erin_at_risk):
    # A renewal moved the review a year on, so last year's warning is old.
    Member.objects.filter(pk=erin_at_risk.pk).update(review_at=local(2026, 1, 31, 12))

    html = page_as_of(client, monkeypatch, erin_at_risk, local(2025, 2, 5))

    assert "review-warning" not in html
    assert ReviewWarning.objects.filter(member=erin_at_risk).exists()


def test_page_warning_query_count(
    client, monkeypatch, erin_at_risk, django_assert_num_queries
):
    monkeypatch.setattr(
        views,
        "member_progress",
        lambda shown, _as_of, **options: member_progress(
            shown, local(2025, 1, 10), **options
        ),
    )

    client.get(member_page_url(erin_at_risk))

    # The warning and the overrides that the pace projection checks for a
    # reviewed tier come with the page's rows.
    with django_assert_num_queries(PAGE_QUERIES):
        response = client.get(member_page_url(erin_at_risk))

    assert response.context["review_warning"] == (
        "1月31日复核：还差净消费¥500，补足即可保级Gold"
    )


# Review warnings in the admin


@pytest.mark.parametrize("count", [3, 30])
def test_warning_changelist_query_count(
    admin_client, reviewed_rules, store, count, django_assert_num_queries
):
    for number in range(count):
        member = make_member(store, f"W-{number}")
        for day in range(26, 32):
            record(member, store, "purchase", local(2024, 1, day), "1000")
        record(member, store, "refund", local(2024, 3, 1), "-4500")
    evaluate(as_of=local(2024, 1, 31, 12))
    assert record_review_warnings(local(2025, 1, 10), days_ahead=30) == count

    # session, user, the paginator's count, and the rows with member and
    # tier joined. A superuser needs no permission queries, and the full
    # count is switched off.
    with django_assert_num_queries(4):
        response = admin_client.get(
            reverse("admin:tiers_reviewwarning_changelist"),
            HTTP_ACCEPT_LANGUAGE="en",
        )

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == count
    html = response.content.decode()
    assert html.count("Review on 31 January: ¥500 more net spend keeps Gold") == count


def test_warning_admin_is_read_only(admin_client, erin_at_risk):
    warning = ReviewWarning.objects.get()

    add = admin_client.get(reverse("admin:tiers_reviewwarning_add"))
    delete = admin_client.post(
        reverse("admin:tiers_reviewwarning_delete", args=[warning.pk]), {"post": "yes"}
    )

    assert add.status_code == 403
    assert delete.status_code == 403
    assert ReviewWarning.objects.filter(pk=warning.pk).exists()


def test_merged_member_page_says_merged(client, alice, store):
    kept = make_member(store, "KEPT-1", name="Kept Member")
    alice.merged_into = kept
    alice.save()

    response = client.get(member_page_url(alice), HTTP_ACCEPT_LANGUAGE="en")

    html = response.content.decode()
    assert response.status_code == 200
    assert "This membership was merged" in html
    assert "Kept Member" not in html
    assert alice.name not in html
