"""The pace sentences on the member page: "At your pace, Silver by August."

Amy is a Bronze member working towards Silver. Tom has Silver and, at his
pace, falls short at his review. The page is rendered as of AS_OF, 1 March
2025 at noon in Shanghai.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import translation

from members import views
from members.links import member_page_url
from members.models import Member
from tests.conftest import local, make_member, publish_spec, record
from tiers.evaluation import explain_member
from tiers.ladder import Ladder
from tiers.models import Validity
from tiers.outlook import member_pace
from tiers.progress import member_progress
from tiers.rules import Need, TierSpec, VersionSpec, all_of

pytestmark = pytest.mark.django_db

AS_OF = local(2025, 3, 1, 12)


@pytest.fixture
def lifetime_silver(tiers):
    """Silver needs ¥1,000 of lifetime spend."""
    publish_spec(
        VersionSpec(
            tiers=[
                TierSpec(tiers["bronze"]),
                TierSpec(
                    tiers["silver"], all_of(Need("net_spend", 1000, window="lifetime"))
                ),
            ]
        )
    )
    return tiers


@pytest.fixture
def silver_rules(tiers):
    """Silver needs ¥5,000 within 30 days, is reviewed yearly and is kept with
    ¥1,000 of spend in the calendar year."""
    publish_spec(
        VersionSpec(
            tiers=[
                TierSpec(tiers["bronze"]),
                TierSpec(
                    tiers["silver"],
                    all_of(Need("net_spend", 5000, days=30)),
                    all_of(Need("net_spend", 1000, window="year_to_date")),
                    validity=Validity.MONTHS,
                    validity_months=12,
                ),
                TierSpec(
                    tiers["gold"], all_of(Need("net_spend", 20000, window="lifetime"))
                ),
            ]
        )
    )
    return tiers


@pytest.fixture
def amy(silver_rules, store) -> Member:
    """Bronze, ¥400 towards Silver's ¥5,000 in 30 days, ¥300 of it lately."""
    member = make_member(store, "AMY")
    member.tier = silver_rules["bronze"]
    member.save()
    record(member, store, "purchase", AS_OF - dt.timedelta(days=200), "100")
    record(member, store, "purchase", AS_OF - dt.timedelta(days=10), "300")
    return member


@pytest.fixture
def tom(silver_rules, store) -> Member:
    """Silver, ¥400 this year, ¥450 in the pace window, review on 29 June."""
    member = make_member(store, "TOM")
    member.tier = silver_rules["silver"]
    member.tier_since = AS_OF - dt.timedelta(days=100)
    member.review_at = local(2025, 6, 29)
    member.save()
    record(member, store, "purchase", local(2024, 12, 10, 12), "50")
    record(member, store, "purchase", local(2025, 1, 5, 12), "100")
    record(member, store, "purchase", local(2025, 2, 1, 12), "300")
    return member


def page_as_of(client, monkeypatch, member: Member, language: str = "en") -> str:
    """Return the member page as the view renders it as of AS_OF."""
    # The pace sentences use the moment of the progress section.
    monkeypatch.setattr(
        views,
        "member_progress",
        lambda shown, _as_of, **options: member_progress(shown, AS_OF, **options),
    )
    response = client.get(member_page_url(member), HTTP_ACCEPT_LANGUAGE=language)
    assert response.status_code == 200
    return response.content.decode()


def test_pace_sentence_for_next_tier(lifetime_silver, store, client, monkeypatch):
    amy = make_member(store, "AMY")
    amy.tier = lifetime_silver["bronze"]
    amy.save()
    record(amy, store, "purchase", AS_OF - dt.timedelta(days=200), "100")
    record(amy, store, "purchase", AS_OF - dt.timedelta(days=10), "300")

    html = page_as_of(client, monkeypatch, amy)

    # ¥600 more at ¥300 per 90 days takes 180 days: 28 August.
    assert (
        '<p class="pace">At your pace, Silver by August. '
        '<span class="pace-basis">Based on your last 90 days: net spend ¥300.'
        "</span></p>"
    ) in html
    assert "pace-risk" not in html


def test_pace_sentence_in_chinese(lifetime_silver, store, client, monkeypatch):
    amy = make_member(store, "AMY")
    record(amy, store, "purchase", AS_OF - dt.timedelta(days=10), "300")

    html = page_as_of(client, monkeypatch, amy, "zh-hans")

    assert '<p class="pace">' in html
    assert "Silver" in html
    # The month is written in the page's language.
    assert "August" not in html


def test_pace_sentence_when_pace_reaches_nothing(amy, client, monkeypatch):
    # ¥300 in 90 days fills a 30-day window with at most ¥100, never ¥5,000.
    html = page_as_of(client, monkeypatch, amy)

    assert '<p class="pace">' not in html


def test_risk_sentence_at_review(tom, client, monkeypatch):
    html = page_as_of(client, monkeypatch, tom)

    # ¥5 a day brings the year's ¥400 to ¥995 by the end of 28 June.
    assert (
        '<p class="pace-risk">At your pace you would fall short of keeping Silver '
        "at your review on 29 Jun 2025.</p>"
    ) in html


def test_no_risk_sentence_when_pace_keeps_tier(tom, client, monkeypatch):
    tom.review_at = local(2025, 6, 30)
    tom.save()

    html = page_as_of(client, monkeypatch, tom)

    assert "pace-risk" not in html


def test_member_pace_query_count(tom, django_assert_num_queries):
    # Six queries load the rules (version, groups, requirements, tier rules,
    # activity kinds, weights), one aggregate reads the metrics and the pace
    # together, and Tom's review date adds the overrides that could keep his
    # tier.
    with django_assert_num_queries(8), translation.override("en"):
        pace = member_pace(tom, AS_OF)

    assert pace.risk.startswith("At your pace you would fall short")


def test_member_pace_reuses_evaluation(tom, django_assert_num_queries):
    ladder = Ladder.load(as_of=AS_OF)
    evaluation = explain_member(tom, AS_OF, ladder)

    # The pace aggregate and the overrides that could keep Tom's tier.
    with django_assert_num_queries(2), translation.override("en"):
        reused = member_pace(tom, AS_OF, ladder=ladder, metrics=evaluation.metrics)

    with translation.override("en"):
        assert reused == member_pace(tom, AS_OF)
