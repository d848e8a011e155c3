"""Rule versions: drafts, publishing, policies, retention, weights, simulation."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.utils import timezone, translation
from django_q.models import OrmQ, Schedule

from members.models import Channel
from tests.conftest import local, make_member, publish_spec, record, standard_spec
from tiers.evaluation import evaluate, explain_member
from tiers.jobs import reevaluate_everyone
from tiers.ladder import Ladder
from tiers.models import (
    GrowthWeight,
    PublishedVersionError,
    Requirement,
    RuleGroup,
    RuleVersion,
    TierChange,
    TierRule,
    Validity,
)
from tiers.publishing import PublishError, publish
from tiers.rules import (
    Need,
    TierSpec,
    VersionSpec,
    WeightSpec,
    all_of,
    any_of,
    at_least,
    build,
    copy_to_draft,
)
from tiers.simulation import simulate
from tiers.validation import version_problems

pytestmark = pytest.mark.django_db

AS_OF = local(2024, 6, 30, 12, 0)


@pytest.fixture(autouse=True)
def english():
    """Read messages in English; the program's default language is Chinese."""
    with translation.override("en"):
        yield


@pytest.fixture
def editor(db) -> User:
    return User.objects.create_user("editor", "editor@example.com", "pw-12345-x")


def tier_of(member) -> str:
    member.refresh_from_db()
    return member.tier.name


def gold_needs(tiers, spend: int, *, retention: int | None = None) -> VersionSpec:
    """The standard ladder with Gold's spend threshold (and retention) changed."""
    spec = standard_spec(tiers)
    gold = spec.tiers[2]
    gold.entry = all_of(Need("net_spend", spend), Need("orders", 6))
    if retention is not None:
        gold.retention = all_of(Need("net_spend", retention))
    return spec


def gold_member(store, external_id: str = "G", *, recent: bool = False):
    """A member with 6 orders of 1,000: Gold under the standard rules.

    The orders fall in June 2024, or in the last week with ``recent``, for
    tests that evaluate as of now.
    """
    member = make_member(store, external_id)
    for day in range(1, 7):
        when = (
            timezone.now() - dt.timedelta(days=day) if recent else local(2024, 6, day)
        )
        record(member, store, "purchase", when, "1000")
    return member


def shape(ladder: Ladder) -> list:
    """Return a ladder's rules without database ids, for comparing copies."""

    def node(item):
        if hasattr(item, "items"):
            return (item.operator, item.at_least, [node(i) for i in item.items])
        return (item.metric, item.window, str(item.threshold))

    return [
        (
            tier.name,
            tier.entry and node(tier.entry),
            tier.retention and node(tier.retention),
        )
        for tier in ladder.tiers
    ]


# Published versions are frozen


def test_published_requirement_cannot_change(ladder):
    requirement = Requirement.objects.filter(metric="net_spend").first()
    requirement.threshold = Decimal("1")

    with pytest.raises(PublishedVersionError, match="is published and cannot change"):
        requirement.save()


def test_published_parts_cannot_be_deleted(ladder):
    with pytest.raises(PublishedVersionError):
        Requirement.objects.first().delete()
    with pytest.raises(PublishedVersionError):
        RuleGroup.objects.first().delete()
    with pytest.raises(PublishedVersionError):
        TierRule.objects.first().delete()


def test_published_weight_cannot_be_added(tiers):
    version = publish_spec(standard_spec(tiers))
    purchase = GrowthWeight._meta.get_field("kind").related_model.objects.get(
        code="purchase"
    )

    with pytest.raises(PublishedVersionError):
        GrowthWeight.objects.create(version=version, kind=purchase, points_per_unit=1)


def test_publishing_twice_is_refused(ladder, editor):
    version = RuleVersion.objects.get()

    with pytest.raises(PublishError, match="already published"):
        publish(version, user=editor, reason="again", policy="reevaluate")


# Drafts


def test_copy_to_draft_keeps_every_rule(tiers, editor):
    spec = standard_spec(tiers, [WeightSpec("purchase", per_event=10, per_unit=1)])
    spec.tiers[2].retention = any_of(
        Need("net_spend", 3000), at_least(1, Need("orders", 4), Need("visits", 9))
    )
    source = publish_spec(spec)

    draft = copy_to_draft(source, user=editor)

    assert draft.is_draft
    assert draft.based_on == source
    assert draft.created_by == editor
    assert shape(Ladder.load(draft)) == shape(Ladder.load(source))
    assert (
        Requirement.objects.filter(version=draft).count()
        == Requirement.objects.filter(version=source).count()
    )
    assert GrowthWeight.objects.get(version=draft).points_per_event == 10


def test_draft_edit_leaves_source_alone(ladder, editor):
    source = RuleVersion.objects.get()
    draft = copy_to_draft(source, user=editor)
    requirement = Requirement.objects.get(version=draft, metric="orders")

    requirement.threshold = Decimal("8")
    requirement.save()

    assert Requirement.objects.get(version=source, metric="orders").threshold == 6


def test_requirement_takes_its_group_version(tiers):
    draft = build(standard_spec(tiers))
    group = RuleGroup.objects.filter(version=draft).first()

    requirement = Requirement(
        group=group, metric="visits", window="lifetime", threshold=2
    )
    requirement.save()

    assert requirement.version == draft


# Publishing


def test_publish_records_who_when_why(tiers, editor):
    draft = build(standard_spec(tiers))

    version = publish(
        draft, user=editor, reason="Spring campaign", policy="new_activity"
    )

    assert version.status == RuleVersion.Status.PUBLISHED
    assert version.published_by == editor
    assert version.publish_reason == "Spring campaign"
    assert version.policy == "new_activity"
    assert abs(version.effective_from - timezone.now()) < dt.timedelta(seconds=5)
    history = version.history.first()
    assert history.history_change_reason == "Published: Spring campaign"


def test_publish_needs_a_reason(tiers, editor):
    with pytest.raises(PublishError, match="Say why"):
        publish(
            build(standard_spec(tiers)), user=editor, reason=" ", policy="reevaluate"
        )


def test_publish_rejects_past_date(tiers, editor):
    with pytest.raises(PublishError, match="in the past"):
        publish(
            build(standard_spec(tiers)),
            user=editor,
            reason="backdate",
            policy="reevaluate",
            effective_from=timezone.now() - dt.timedelta(days=1),
        )


def test_publish_rejects_blocking_problem(tiers, editor):
    spec = standard_spec(tiers)
    spec.tiers[2].entry = all_of(Need("net_spend", 500), Need("orders", 6))

    with pytest.raises(PublishError, match="Gold is easier to reach than Silver"):
        publish(build(spec), user=editor, reason="oops", policy="reevaluate")


def test_reevaluate_policy_queues_job(
    tiers, editor, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        version = publish(
            build(standard_spec(tiers)), user=editor, reason="now", policy="reevaluate"
        )

    assert OrmQ.objects.count() == 1
    task = OrmQ.objects.get().task
    assert task["func"] == "tiers.jobs.reevaluate_everyone"
    assert task["args"] == (version.pk,)


def test_future_version_schedules_job(
    tiers, editor, django_capture_on_commit_callbacks
):
    later = timezone.now() + dt.timedelta(days=3)

    with django_capture_on_commit_callbacks(execute=True):
        version = publish(
            build(standard_spec(tiers)),
            user=editor,
            reason="next month",
            policy="reevaluate",
            effective_from=later,
        )

    schedule = Schedule.objects.get(name=f"reevaluate-v{version.number}")
    assert schedule.next_run == later
    assert schedule.schedule_type == Schedule.ONCE
    assert OrmQ.objects.count() == 0


def test_future_version_not_in_effect_yet(ladder, store, editor):
    member = gold_member(store, recent=True)
    publish(
        build(gold_needs(ladder, 9000)),
        user=editor,
        reason="stricter from next week",
        policy="reevaluate",
        effective_from=timezone.now() + dt.timedelta(days=7),
    )

    evaluate()

    assert tier_of(member) == "Gold"
    assert TierChange.objects.get(member=member).version.number == 1


def test_job_reevaluates_once(ladder, store, editor):
    member = gold_member(store, recent=True)
    evaluate()
    version = publish(
        build(gold_needs(ladder, 9000)),
        user=editor,
        reason="stricter",
        policy="reevaluate",
    )

    first = reevaluate_everyone(version.pk)
    second = reevaluate_everyone(version.pk)

    assert first == {"evaluated": 1, "changed": 1}
    assert second == {"evaluated": 1, "changed": 0}
    assert tier_of(member) == "Silver"
    latest = TierChange.objects.filter(member=member).first()
    assert latest.version == version


def test_job_for_superseded_version_does_nothing(ladder, store, editor):
    gold_member(store, recent=True)
    old = publish(
        build(gold_needs(ladder, 9000)), user=editor, reason="a", policy="reevaluate"
    )
    publish(
        build(gold_needs(ladder, 5000)), user=editor, reason="b", policy="reevaluate"
    )

    assert reevaluate_everyone(old.pk) == {"evaluated": 0, "changed": 0}


# Publish policies


def test_new_activity_policy_waits_for_activity(ladder, store, editor):
    quiet = gold_member(store, "Q", recent=True)
    active = gold_member(store, "A", recent=True)
    evaluate()
    publish(
        build(gold_needs(ladder, 9000)), user=editor, reason="x", policy="new_activity"
    )

    evaluate()
    assert tier_of(quiet) == "Gold"
    assert tier_of(active) == "Gold"

    record(active, store, "visit", timezone.now())
    evaluate()

    assert tier_of(quiet) == "Gold"
    assert tier_of(active) == "Silver"
    evaluation = explain_member(quiet)
    assert evaluation.explanation["held_by_policy"] == "new_activity"


def test_grandfather_policy_keeps_tier_allows_promotion(ladder, store, editor):
    gold = gold_member(store, "G", recent=True)
    climber = make_member(store, "C")
    record(climber, store, "purchase", timezone.now() - dt.timedelta(days=30), "1000")
    evaluate()
    assert tier_of(climber) == "Silver"
    spec = gold_needs(ladder, 9000)
    spec.tiers[1].entry = all_of(Need("net_spend", 500))
    publish(build(spec), user=editor, reason="x", policy="grandfather")
    record(climber, store, "purchase", timezone.now(), "8000")
    for day in range(5):
        record(climber, store, "purchase", timezone.now() - dt.timedelta(days=day), "1")

    evaluate()

    assert tier_of(gold) == "Gold"  # would drop to Silver without grandfathering
    assert tier_of(climber) == "Gold"


def test_reevaluate_policy_applies_at_once(ladder, store, editor):
    member = gold_member(store, recent=True)
    evaluate()
    publish(
        build(gold_needs(ladder, 9000)), user=editor, reason="x", policy="reevaluate"
    )

    evaluate()

    assert tier_of(member) == "Silver"


# Retention (保级)


def test_retention_keeps_tier_below_entry(tiers, store):
    publish_spec(gold_needs(tiers, 5000, retention=3000))
    member = gold_member(store)
    evaluate(as_of=AS_OF)
    record(member, store, "refund", local(2024, 6, 20), "-2500")

    evaluate(as_of=AS_OF)

    assert tier_of(member) == "Gold"  # 3,500 net: below entry, above retention
    evaluation = explain_member(member, as_of=AS_OF)
    assert evaluation.explanation["retention"]["reached"] is True


def test_retention_failure_drops_tier(tiers, store):
    publish_spec(gold_needs(tiers, 5000, retention=3000))
    member = gold_member(store)
    evaluate(as_of=AS_OF)
    record(member, store, "refund", local(2024, 6, 20), "-3500")

    evaluate(as_of=AS_OF)

    assert tier_of(member) == "Silver"


def test_retention_never_admits_newcomers(tiers, store):
    publish_spec(gold_needs(tiers, 5000, retention=3000))
    member = make_member(store, "N")
    for day in range(1, 7):
        record(member, store, "purchase", local(2024, 6, day), "600")

    evaluate(as_of=AS_OF)

    assert tier_of(member) == "Silver"  # 3,600 meets retention, not entry


# Nested groups and weights in the database


def test_nested_groups_evaluate_from_ledger(tiers, store):
    spec = VersionSpec(
        tiers=[
            TierSpec(tiers["bronze"]),
            TierSpec(
                tiers["gold"],
                any_of(
                    all_of(Need("net_spend", 5000), Need("orders", 6)),
                    Need("growth_value", 8000, window="lifetime"),
                ),
            ),
        ],
        weights=[WeightSpec("visit", per_event=1000)],
    )
    publish_spec(spec)
    spender = gold_member(store, "S")
    visitor = make_member(store, "V")
    for day in range(1, 9):
        record(visitor, store, "visit", local(2024, 6, day))
    neither = make_member(store, "N")
    record(neither, store, "purchase", local(2024, 6, 1), "6000")

    evaluate(as_of=AS_OF)

    assert tier_of(spender) == "Gold"
    assert tier_of(visitor) == "Gold"
    assert tier_of(neither) == "Bronze"


def test_channel_weight_overrides_kind_weight(tiers, store):
    app = Channel.objects.create(code="app", name="App", kind="social")
    publish_spec(
        standard_spec(
            tiers,
            [
                WeightSpec("review", per_event=5),
                WeightSpec("review", per_event=20, channel="app"),
            ],
        )
    )
    member = make_member(store, "R")
    record(member, store, "review", local(2024, 6, 1))
    record(member, app, "review", local(2024, 6, 2))

    evaluation = explain_member(member, as_of=AS_OF)

    assert evaluation.metrics["growth_value__lifetime"] == Decimal("25")


def test_daily_cap_limits_points_per_day(tiers, store):
    publish_spec(
        standard_spec(tiers, [WeightSpec("review", per_event=10, daily_cap=20)])
    )
    member = make_member(store, "R")
    for hour in range(9, 14):  # five reviews on 1 June: 50 points, capped at 20
        record(member, store, "review", local(2024, 6, 1, hour))
    record(member, store, "review", local(2024, 6, 2, 9))

    evaluation = explain_member(member, as_of=AS_OF)

    assert evaluation.metrics["growth_value__lifetime"] == Decimal("30")


def test_window_cap_limits_points_per_window(tiers, store):
    publish_spec(
        standard_spec(
            tiers,
            [
                WeightSpec("referral", per_event=100, window_cap=250),
                WeightSpec("purchase", per_unit=1),
            ],
        )
    )
    member = make_member(store, "F")
    for day in range(1, 5):
        record(member, store, "referral", local(2024, 6, day))
    record(member, store, "purchase", local(2024, 6, 5), "40")

    evaluation = explain_member(member, as_of=AS_OF)

    assert evaluation.metrics["growth_value__lifetime"] == Decimal("290")


def test_history_row_names_version(ladder, store):
    member = gold_member(store)

    evaluate(as_of=AS_OF)

    change = TierChange.objects.get(member=member)
    assert change.version.number == 1
    assert change.explanation["version"] == 1


# Validation


def test_base_tier_with_requirements_blocks(tiers):
    spec = standard_spec(tiers)
    spec.tiers[0].entry = all_of(Need("orders", 1))

    messages = [p.message for p in version_problems(build(spec)) if p.blocking]

    assert any("has no base tier" in m for m in messages)


def test_impossible_active_days_blocks(tiers):
    spec = standard_spec(tiers)
    spec.tiers[1].entry = all_of(Need("active_days", 40, days=30))

    problems = version_problems(build(spec))

    assert any(
        "which no member can reach" in p.message and p.blocking for p in problems
    )


def test_count_that_looks_like_money_warns(tiers):
    spec = standard_spec(tiers)
    spec.tiers[2].entry = all_of(Need("net_spend", 5000), Need("orders", 5000))

    problems = version_problems(build(spec))

    warning = next(p for p in problems if "amount typed into a count" in p.message)
    assert warning.blocking is False


def test_window_longer_than_data_warns(tiers, store):
    member = make_member(store, "W")
    record(member, store, "purchase", timezone.now() - dt.timedelta(days=100), "1")
    spec = standard_spec(tiers)
    spec.tiers[1].entry = all_of(Need("net_spend", 1000, days=730))

    problems = version_problems(build(spec))

    warning = next(p for p in problems if "looks back 730 days" in p.message)
    assert "holds only 101 days" in warning.message
    assert warning.blocking is False


def test_stricter_retention_warns(tiers):
    problems = version_problems(build(gold_needs(tiers, 5000, retention=7000)))

    assert any("harder to keep than to enter" in p.message for p in problems)


# Simulation


def test_simulation_matches_publish(ladder, store, editor):
    members = [gold_member(store, f"G{i}", recent=True) for i in range(2)]
    silver = make_member(store, "S")
    record(silver, store, "purchase", timezone.now() - dt.timedelta(days=30), "1500")
    make_member(store, "B")
    evaluate()
    draft = build(gold_needs(ladder, 6500))
    silver_need = Requirement.objects.get(
        version=draft, metric="net_spend", threshold=1000
    )
    silver_need.threshold = Decimal("2000")
    silver_need.save()

    result = simulate(draft)
    predicted = {mover.member_id: mover.to_tier for mover in result.movers}
    version = publish(draft, user=editor, reason="compare", policy="reevaluate")
    reevaluate_everyone(version.pk)

    assert result.count("Gold", "Silver") == 2
    assert result.count("Silver", "Bronze") == 1
    assert result.count("Bronze", "Bronze") == 1
    assert result.down_from["Gold"] == 2
    for member in [*members, silver]:
        assert tier_of(member) == predicted[member.pk]
    assert len(predicted) == 3


# Guards found by QA


def test_published_version_row_cannot_change(ladder):
    version = RuleVersion.objects.get()
    version.effective_from = timezone.now() + dt.timedelta(days=365)

    with pytest.raises(PublishedVersionError, match="is published and cannot change"):
        version.save()
    with pytest.raises(PublishedVersionError, match="cannot be deleted"):
        version.delete()


def test_group_cannot_leave_published_version(ladder, editor):
    draft = copy_to_draft(RuleVersion.objects.get(), user=editor)
    group = RuleGroup.objects.filter(version__status="published").first()
    group.version = draft

    with pytest.raises(PublishedVersionError):
        group.save()


def test_window_longer_than_ten_years_rejected(tiers):
    draft = build(standard_spec(tiers))
    requirement = Requirement.objects.filter(version=draft).first()
    requirement.window_days = 3_000_000

    with pytest.raises(ValidationError) as raised:
        requirement.full_clean()

    assert raised.value.error_dict["window_days"][0].code == "max_value"


def test_tier_left_out_of_version_is_a_demotion(ladder, store, editor):
    member = gold_member(store, recent=True)
    evaluate()
    spec = standard_spec(ladder)
    spec.tiers = [t for t in spec.tiers if t.tier.name != "Gold"]
    publish(build(spec), user=editor, reason="no more Gold", policy="reevaluate")

    evaluate()

    latest = TierChange.objects.filter(member=member).first()
    assert tier_of(member) == "Silver"
    assert latest.reason == TierChange.Reason.DEMOTION
    assert latest.from_tier.name == "Gold"


def test_grandfather_keeps_tier_left_out_of_version(ladder, store, editor):
    member = gold_member(store, recent=True)
    evaluate()
    spec = standard_spec(ladder)
    spec.tiers = [t for t in spec.tiers if t.tier.name != "Gold"]
    publish(build(spec), user=editor, reason="no more Gold", policy="grandfather")

    summary, _ = evaluate()

    assert tier_of(member) == "Gold"
    assert summary.changed == 0


def test_grandfather_ends_at_review(tiers, store, editor):
    spec = standard_spec(tiers)
    spec.tiers[2].validity = Validity.MONTHS
    spec.tiers[2].validity_months = 1
    publish_spec(spec)
    member = gold_member(store, recent=True)
    evaluate()
    member.refresh_from_db()
    stricter = gold_needs(tiers, 9000)
    stricter.tiers[2].validity = Validity.MONTHS
    stricter.tiers[2].validity_months = 1
    publish(build(stricter), user=editor, reason="x", policy="grandfather")

    evaluate()
    assert tier_of(member) == "Gold"

    evaluate(as_of=member.review_at + dt.timedelta(seconds=1))
    assert tier_of(member) == "Silver"
