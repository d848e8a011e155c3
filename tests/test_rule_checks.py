"""Checks before publishing: publishing order, rule tree shape, tier order,
message wording, and the simulation's export and column headings."""

from __future__ import annotations

import datetime as dt
import io
import re

import openpyxl
import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation import pgettext

from tests.conftest import SHANGHAI, make_member, record, standard_spec
from tiers.evaluation import evaluate
from tiers.models import Requirement, RuleGroup, RuleVersion, Tier, TierRule
from tiers.publishing import PublishError, publish, scheduled_after
from tiers.rules import (
    Need,
    TierSpec,
    VersionSpec,
    all_of,
    any_of,
    at_least,
    build,
    copy_to_draft,
)
from tiers.simulation import movers_workbook, simulate
from tiers.validation import LadderProblem, version_problems

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def english():
    """Read messages in English, because the program's default language is Chinese."""
    with translation.override("en"):
        yield


@pytest.fixture
def editor(db) -> User:
    return User.objects.create_user("editor", "editor@example.com", "pw-12345-x")


def three_tiers(tiers, silver, gold) -> VersionSpec:
    """Bronze as the base tier, then Silver and Gold with the given entries."""
    return VersionSpec(
        tiers=[
            TierSpec(tiers["bronze"]),
            TierSpec(tiers["silver"], silver),
            TierSpec(tiers["gold"], gold),
        ]
    )


def problems_of(spec_or_version) -> list[LadderProblem]:
    version = (
        spec_or_version
        if isinstance(spec_or_version, RuleVersion)
        else build(spec_or_version)
    )
    return version_problems(version)


def matching(problems: list[LadderProblem], text: str) -> list[LadderProblem]:
    return [problem for problem in problems if text in problem.message]


def entry_of(version: RuleVersion, tier: str) -> RuleGroup:
    return TierRule.objects.get(version=version, tier__name=tier).entry


# Publishing order


def publish_later(tiers, editor, days: int) -> RuleVersion:
    return publish(
        build(standard_spec(tiers)),
        user=editor,
        reason=f"in {days} days",
        policy="reevaluate",
        effective_from=timezone.now() + dt.timedelta(days=days),
    )


def test_publish_before_scheduled_rejected(ladder, editor):
    scheduled = publish_later(ladder, editor, 10)
    draft = build(standard_spec(ladder))

    with pytest.raises(PublishError) as raised:
        publish(draft, user=editor, reason="now", policy="reevaluate")

    local = scheduled.effective_from.astimezone(SHANGHAI)
    message = raised.value.messages[0]
    assert f"Version {scheduled.number} is scheduled to take effect at" in message
    assert f"{local:%Y-%m-%d %H:%M} (Asia/Shanghai)" in message
    assert "would replace this version" in message
    draft.refresh_from_db()
    assert draft.is_draft


def test_publish_names_last_scheduled_date(ladder, editor):
    first = publish_later(ladder, editor, 10)
    last = publish_later(ladder, editor, 20)

    with pytest.raises(PublishError) as raised:
        publish(
            build(standard_spec(ladder)),
            user=editor,
            reason="between them",
            policy="reevaluate",
            effective_from=timezone.now() + dt.timedelta(days=15),
        )

    message = raised.value.messages[0]
    last_local = last.effective_from.astimezone(SHANGHAI)
    assert f"Version {first.number} is scheduled" not in message
    assert f"Version {last.number} is scheduled" in message
    assert f"after {last_local:%Y-%m-%d %H:%M}" in message


def test_publish_after_scheduled_allowed(ladder, editor):
    publish_later(ladder, editor, 10)

    version = publish(
        build(standard_spec(ladder)),
        user=editor,
        reason="after it",
        policy="reevaluate",
        effective_from=timezone.now() + dt.timedelta(days=11),
    )

    assert version.status == RuleVersion.Status.PUBLISHED


def test_scheduled_after_lists_future_only(ladder, editor):
    later = publish_later(ladder, editor, 10)
    latest = publish_later(ladder, editor, 20)
    long_ago = dt.datetime(1990, 1, 1, tzinfo=dt.UTC)

    assert scheduled_after(timezone.now()) == [later, latest]
    assert scheduled_after(timezone.now() + dt.timedelta(days=15)) == [latest]
    assert scheduled_after(timezone.now() + dt.timedelta(days=30)) == []
    # Version 1 is in effect already, so it is not scheduled after 1990.
    assert scheduled_after(long_ago) == [later, latest]


def test_scheduled_after_skips_drafts(ladder):
    build(standard_spec(ladder))

    assert scheduled_after(timezone.now()) == []


# Empty groups and impossible "at least N" groups


def test_empty_group_makes_tier_free(tiers):
    silver = any_of(Need("net_spend", 1000), all_of(label="loyal route"))
    spec = three_tiers(tiers, silver, all_of(Need("net_spend", 5000)))

    found = matching(problems_of(spec), "loyal route")

    assert len(found) == 1
    message = found[0].message
    assert message.startswith("Silver: loyal route has no requirements")
    assert "so it is always met" in message
    assert "every member reaches Silver" in message
    assert found[0].blocking is True
    assert found[0].tier_names == {"Silver"}


def test_empty_group_in_all_of_blocks(tiers):
    silver = all_of(Need("net_spend", 1000), all_of(label="loyal route"))
    spec = three_tiers(tiers, silver, all_of(Need("net_spend", 5000)))

    found = matching(problems_of(spec), "loyal route")

    assert len(found) == 1
    assert "so it is always met" in found[0].message
    assert "every member reaches" not in found[0].message
    assert found[0].blocking is True


def test_empty_any_group_never_met(tiers):
    gold = all_of(Need("net_spend", 5000), any_of(label="app route"))
    spec = three_tiers(tiers, all_of(Need("net_spend", 1000)), gold)

    found = matching(problems_of(spec), "app route")

    assert len(found) == 1
    assert "so no member can meet it" in found[0].message
    assert "no member can reach Gold" in found[0].message
    assert found[0].blocking is True


def test_empty_retention_keeps_tier(tiers):
    spec = three_tiers(
        tiers, all_of(Need("net_spend", 1000)), all_of(Need("net_spend", 5000))
    )
    spec.tiers[2].retention = all_of(label="Gold keep")

    found = matching(problems_of(spec), "Gold keep")

    assert len(found) == 1
    assert "no member loses Gold at review" in found[0].message
    assert found[0].blocking is True


def test_at_least_more_than_items_blocks(tiers):
    gold = at_least(3, Need("net_spend", 5000), Need("orders", 6), label="Gold mix")
    spec = three_tiers(tiers, all_of(Need("net_spend", 1000)), gold)

    found = matching(problems_of(spec), "at least 3 of its 2 items")

    assert len(found) == 1
    assert found[0].message.startswith("Gold mix needs at least 3 of its 2 items")
    assert "no member can reach Gold" in found[0].message
    assert "Lower N to 2 or less" in found[0].message
    assert found[0].blocking is True


def test_at_least_within_items_passes(tiers):
    gold = at_least(2, Need("net_spend", 5000), Need("orders", 6))
    spec = three_tiers(tiers, all_of(Need("net_spend", 1000)), gold)

    problems = problems_of(spec)

    assert matching(problems, "of its") == []
    assert matching(problems, "no requirements") == []


def test_empty_entry_reported_once(tiers):
    spec = three_tiers(tiers, all_of(Need("net_spend", 1000)), all_of())

    found = matching(problems_of(spec), "has no requirements")

    assert [p.message.split(",")[0] for p in found] == ["Gold has no requirements"]


# Groups outside the tiers and groups used twice


def test_unused_group_warns(tiers):
    draft = build(standard_spec(tiers))
    unused = RuleGroup.objects.create(version=draft, label="old idea")
    RuleGroup.objects.create(version=draft, parent=unused, label="old idea inner")
    Requirement.objects.create(
        group=unused, metric="orders", window="lifetime", threshold=3
    )

    found = matching(problems_of(draft), "belongs to no tier")

    assert len(found) == 1
    assert found[0].message.startswith("Old idea belongs to no tier")
    assert found[0].blocking is False


def test_root_of_two_tiers_blocks(tiers):
    draft = build(standard_spec(tiers))
    silver = TierRule.objects.get(version=draft, tier__name="Silver")
    silver.retention = entry_of(draft, "Gold")
    silver.save()

    found = matching(problems_of(draft), "Give each tier its own group")

    assert len(found) == 1
    assert "Silver's retention requirements" in found[0].message
    assert "Gold's entry requirements" in found[0].message
    assert found[0].tier_names == {"Silver", "Gold"}
    assert found[0].blocking is True


def test_root_inside_group_blocks(tiers):
    draft = build(standard_spec(tiers))
    gold = entry_of(draft, "Gold")
    gold.parent = entry_of(draft, "Silver")
    gold.save()

    found = matching(problems_of(draft), "also sits inside")

    assert len(found) == 1
    assert found[0].message.startswith("Gold entry is Gold's entry requirements")
    assert "inside Silver entry" in found[0].message
    assert found[0].blocking is True


def test_group_loop_blocks_without_crash(tiers):
    draft = build(standard_spec(tiers))
    outer = entry_of(draft, "Gold")
    inner = RuleGroup.objects.create(version=draft, parent=outer, label="inner")
    Requirement.objects.create(
        group=inner, metric="visits", window="lifetime", threshold=2
    )
    outer.parent = inner
    outer.save()

    found = matching(problems_of(draft), "in a loop")

    assert len(found) == 1
    assert "Gold entry, inner" in found[0].message
    assert found[0].blocking is True


def test_base_tier_retention_warns(tiers):
    spec = standard_spec(tiers)
    spec.tiers[0].retention = all_of(Need("orders", 1))

    found = matching(problems_of(spec), "is the base tier")

    assert len(found) == 1
    assert found[0].message.startswith("Bronze is the base tier")
    assert "have no effect" in found[0].message
    assert found[0].blocking is False


def test_group_checks_query_count_flat(tiers):
    small = build(standard_spec(tiers))
    spec = standard_spec(tiers)
    spec.tiers[3].entry = any_of(
        all_of(Need("net_spend", 50000, window="lifetime"), Need("orders", 20)),
        at_least(2, Need("visits", 30), Need("reviews", 5), Need("referrals", 3)),
        all_of(label="empty"),
    )
    large = build(spec)
    RuleGroup.objects.create(version=large, label="unused")

    with CaptureQueriesContext(connection) as small_queries:
        version_problems(small)
    with CaptureQueriesContext(connection) as large_queries:
        version_problems(large)

    assert len(large_queries) == len(small_queries)


# A higher tier easier to reach than a lower one


def test_any_of_lower_tier_implied(tiers):
    silver = any_of(Need("net_spend", 400), Need("orders", 3))
    gold = all_of(Need("net_spend", 250), Need("orders", 4), Need("active_days", 3))

    problems = problems_of(three_tiers(tiers, silver, gold))

    assert matching(problems, "easier to reach") == []


def test_nested_all_of_bound_implies(tiers):
    silver = all_of(Need("net_spend", 1000))
    gold = all_of(
        all_of(Need("net_spend", 1500)),
        any_of(Need("net_spend", 500), Need("visits", 5)),
    )

    problems = problems_of(three_tiers(tiers, silver, gold))

    assert matching(problems, "easier to reach") == []


def test_all_of_lower_threshold_blocks(tiers):
    silver = all_of(Need("net_spend", 1000))
    gold = all_of(Need("net_spend", 500), Need("orders", 6))

    found = matching(problems_of(three_tiers(tiers, silver, gold)), "easier to reach")

    assert len(found) == 1
    message = found[0].message
    assert message.startswith("Gold is easier to reach than Silver")
    assert "without meeting Silver's requirements" in message
    assert (
        "Gold needs net spend of ¥500 in the last 365 days, but Silver needs "
        "net spend of ¥1,000." in message
    )
    assert found[0].blocking is True
    assert found[0].tier_names == {"Gold", "Silver"}


def test_any_of_lower_threshold_warns(tiers):
    silver = all_of(Need("net_spend", 1000))
    gold = any_of(
        all_of(Need("net_spend", 500), Need("orders", 10)),
        Need("net_spend", 2000),
    )

    found = matching(problems_of(three_tiers(tiers, silver, gold)), "easier to reach")

    assert len(found) == 1
    assert found[0].message.startswith("Gold may be easier to reach than Silver")
    assert found[0].blocking is False


def test_unrelated_metrics_not_reported(tiers):
    silver = all_of(Need("net_spend", 1000))
    gold = all_of(Need("orders", 6))

    problems = problems_of(three_tiers(tiers, silver, gold))

    assert matching(problems, "easier to reach") == []


# Message wording


def test_count_threshold_is_whole(tiers):
    silver = all_of(Need("orders", 3))
    gold = all_of(Need("orders", 2), Need("net_spend", 5000))

    found = matching(problems_of(three_tiers(tiers, silver, gold)), "easier to reach")

    assert len(found) == 1
    assert "Gold needs 2 orders in the last 365 days" in found[0].message
    assert "Silver needs 3 orders." in found[0].message
    assert ".00" not in found[0].message


def test_single_count_is_singular(tiers):
    silver = all_of(Need("orders", 2))
    gold = all_of(Need("orders", 1), Need("net_spend", 5000))

    found = matching(problems_of(three_tiers(tiers, silver, gold)), "easier to reach")

    assert "Gold needs 1 order in the last 365 days" in found[0].message


def test_impossible_active_days_whole(tiers):
    spec = standard_spec(tiers)
    spec.tiers[1].entry = all_of(Need("active_days", 40, days=30))

    found = matching(problems_of(spec), "which no member can reach")

    assert len(found) == 1
    assert found[0].message.startswith(
        "Silver needs 40 active days in the last 30 days"
    )


def test_retention_amounts_show_currency(tiers):
    spec = standard_spec(tiers)
    spec.tiers[2].retention = all_of(Need("net_spend", 7000))

    found = matching(problems_of(spec), "harder to keep than to enter")

    assert len(found) == 1
    assert "net spend of ¥7,000 in the last 365 days" in found[0].message
    assert "only net spend of ¥5,000" in found[0].message


def test_messages_start_with_capital(tiers):
    lower_case = Tier.objects.create(name="jade", rank=40, colour="#00a86b")
    spec = standard_spec(tiers)
    spec.tiers.append(TierSpec(lower_case, all_of(Need("orders", 5000))))

    problems = problems_of(spec)

    assert problems
    for problem in problems:
        assert problem.message[0].isupper(), problem.message


# Simulation export and headings


@pytest.fixture
def movers(ladder, store) -> RuleVersion:
    """A draft that moves a Silver member down, with a member new since the
    last evaluation and a Bronze member who stays."""
    now = timezone.now()
    silver = make_member(store, "S", name="falls")
    record(silver, store, "purchase", now - dt.timedelta(days=3), "1500")
    make_member(store, "B", name="stays")
    evaluate()
    make_member(store, "N", name="newcomer")
    draft = copy_to_draft(RuleVersion.objects.get(number=1))
    spend = Requirement.objects.get(group=entry_of(draft, "Silver"))
    spend.threshold = 2000
    spend.save()
    return draft


def workbook_rows(draft: RuleVersion, sheet: str) -> list[tuple]:
    """Return a sheet's rows; sheet titles are translated, so pick by position."""
    workbook = openpyxl.load_workbook(
        io.BytesIO(movers_workbook(simulate(draft))), read_only=True
    )
    index = {"Movers": 0, "Matrix": 1}[sheet]
    return list(workbook.worksheets[index].iter_rows(values_only=True))


def test_export_headers_in_plain_words(movers):
    header = workbook_rows(movers, "Movers")[0]

    assert header[:5] == ("Member ID", "Member", "From", "To", "Direction")
    assert "net spend, last 365 days" in header
    assert "net spend, lifetime" in header
    assert all("__" not in name for name in header)


def test_export_matrix_has_totals(movers):
    rows = workbook_rows(movers, "Matrix")

    assert rows[0] == (
        "From \\ to",
        "Bronze",
        "Silver",
        "Gold",
        "Platinum",
        "Total",
        "Up",
        "Down",
    )
    assert rows[1] == ("(no tier yet)", 1, 0, 0, 0, 1, 0, 0)
    assert rows[2] == ("Bronze", 1, 0, 0, 0, 1, 0, 0)
    assert rows[3] == ("Silver", 1, 0, 0, 0, 1, 0, 1)
    assert rows[-1] == ("Total", 3, 0, 0, 0, 3, 0, 1)


def test_movement_headers_have_context(movers):
    user = User.objects.create_user(
        "staff", "staff@example.com", "pw-12345-x", is_staff=True
    )
    user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["view_ruleversion", "change_ruleversion"]
        )
    )
    client = Client(headers={"accept-language": "zh-hans"})
    client.force_login(user)

    response = client.get(reverse("admin:tiers_ruleversion_simulate", args=[movers.pk]))
    content = response.content.decode()
    with translation.override("zh-hans"):
        up = pgettext("tier movement", "Up")
        down = pgettext("tier movement", "Down")
        matrix = workbook_rows(movers, "Matrix")[0]

    assert response.status_code == 200
    assert re.search(rf'class="number direction-up">{re.escape(up)}<', content)
    assert re.search(rf'class="number direction-down">{re.escape(down)}<', content)
    assert matrix[-2:] == (up, down)
    assert "运行中" not in content
