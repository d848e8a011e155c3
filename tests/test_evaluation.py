"""Tier evaluation: metrics, windows, tier choice, history and query cost."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tests.conftest import local, make_member, publish_spec, record, standard_spec
from tiers.evaluation import evaluate, explain_member
from tiers.ladder import LadderError
from tiers.models import Tier, TierChange
from tiers.rules import Need, TierSpec, VersionSpec, WeightSpec, all_of

pytestmark = pytest.mark.django_db

AS_OF = local(2024, 6, 30, 12, 0)


def tier_of(member):
    member.refresh_from_db()
    return member.tier.name


def test_member_without_activity_gets_base_tier(ladder, store):
    member = make_member(store, "A1")

    evaluate(as_of=AS_OF)

    assert tier_of(member) == "Bronze"
    change = TierChange.objects.get(member=member)
    assert change.reason == TierChange.Reason.INITIAL
    assert change.from_tier is None


def test_threshold_is_inclusive(ladder, store):
    exact = make_member(store, "A1")
    short = make_member(store, "A2")
    record(exact, store, "purchase", local(2024, 6, 1), "1000.00")
    record(short, store, "purchase", local(2024, 6, 1), "999.99")

    evaluate(as_of=AS_OF)

    assert tier_of(exact) == "Silver"
    assert tier_of(short) == "Bronze"


def test_all_requirements_needed_for_gold(ladder, store):
    big_spender = make_member(store, "A1")
    record(big_spender, store, "purchase", local(2024, 6, 1), "9000")
    regular = make_member(store, "A2")
    for day in range(1, 7):
        record(regular, store, "purchase", local(2024, 6, day), "850")

    evaluate(as_of=AS_OF)

    assert tier_of(big_spender) == "Silver"  # 9,000 spent but only 1 order
    assert tier_of(regular) == "Gold"  # 5,100 over 6 orders


def test_any_requirement_reaches_platinum(tiers, store):
    publish_spec(standard_spec(tiers, [WeightSpec("visit", per_event=50000)]))
    weight_member = make_member(store, "A1")
    record(weight_member, store, "visit", local(2024, 6, 1))
    record(weight_member, store, "visit", local(2024, 6, 2))

    evaluate(as_of=AS_OF)

    assert tier_of(weight_member) == "Platinum"  # growth 100,000, spend 0


def test_refunds_reduce_net_spend(ladder, store):
    member = make_member(store, "A1")
    record(member, store, "purchase", local(2024, 6, 1, 9, 15), "5000")
    record(member, store, "refund", local(2024, 6, 1, 9, 27), "-5000")
    record(member, store, "purchase", local(2024, 6, 2), "300")
    record(member, store, "refund", local(2024, 6, 3), "-100")

    evaluation = explain_member(member, as_of=AS_OF)

    assert evaluation.metrics["net_spend__rolling_days_365"] == Decimal("200")
    assert evaluation.tier.name == "Bronze"


def test_growth_value_weights_amount_and_events(tiers, store):
    weights = [
        WeightSpec("purchase", per_event=10, per_unit=2),
        WeightSpec("refund", per_unit=2),
    ]
    publish_spec(standard_spec(tiers, weights))
    member = make_member(store, "A1")
    record(member, store, "purchase", local(2024, 1, 1), "100")
    record(member, store, "refund", local(2024, 1, 2), "-25")

    evaluation = explain_member(member, as_of=AS_OF)

    # (10 + 2 × 100) for the purchase, 2 × −25 for the refund
    assert evaluation.metrics["growth_value__lifetime"] == Decimal("160")


def test_rolling_window_starts_at_local_midnight(ladder, store):
    # 365 days ending 30 June 2024 start on 2 July 2023 (2024 is a leap year).
    inside = make_member(store, "A1")
    outside = make_member(store, "A2")
    record(inside, store, "purchase", local(2023, 7, 2, 0, 0, 0), "1000")
    record(outside, store, "purchase", local(2023, 7, 1, 23, 59, 59), "1000")

    evaluate(as_of=AS_OF)

    assert tier_of(inside) == "Silver"
    assert tier_of(outside) == "Bronze"


def silver_only(tiers, *needs):
    """Publish a version with Bronze and a Silver that needs all of ``needs``."""
    publish_spec(
        VersionSpec(
            tiers=[TierSpec(tiers["bronze"]), TierSpec(tiers["silver"], all_of(*needs))]
        )
    )


def test_year_to_date_uses_program_time_zone(tiers, store):
    silver_only(tiers, Need("net_spend", 1000, window="year_to_date"))
    # 2023-12-31 16:30 UTC is 2024-01-01 00:30 in Shanghai: it counts in 2024.
    new_year = make_member(store, "A1")
    record(new_year, store, "purchase", local(2024, 1, 1, 0, 30), "1000")
    old_year = make_member(store, "A2")
    record(old_year, store, "purchase", local(2023, 12, 31, 23, 59, 59), "1000")

    evaluate(as_of=AS_OF)

    assert tier_of(new_year) == "Silver"
    assert tier_of(old_year) == "Bronze"


def test_as_of_ignores_later_activity(ladder, store):
    member = make_member(store, "A1")
    record(member, store, "purchase", local(2024, 7, 1), "1000")

    evaluate(as_of=AS_OF)

    assert tier_of(member) == "Bronze"


def test_active_days_count_local_dates(tiers, store):
    silver_only(
        tiers,
        Need("net_spend", 1000),
        Need("active_days", 2, window="lifetime"),
    )
    member = make_member(store, "A1")
    # 07:30 and 09:00 Shanghai are one local day, though they straddle UTC midnight.
    record(member, store, "purchase", local(2024, 6, 1, 7, 30), "600")
    record(member, store, "purchase", local(2024, 6, 1, 9, 0), "600")

    evaluation = explain_member(member, as_of=AS_OF)

    assert evaluation.metrics["active_days__lifetime"] == 1
    assert evaluation.tier.name == "Bronze"


def test_refund_day_is_not_active(tiers, store):
    silver_only(tiers, Need("active_days", 1, window="lifetime"))
    member = make_member(store, "A1")
    record(member, store, "purchase", local(2024, 6, 1), "10")
    record(member, store, "refund", local(2024, 6, 2), "-10")

    evaluation = explain_member(member, as_of=AS_OF)

    assert evaluation.metrics["active_days__lifetime"] == 1


def test_explanation_lists_each_requirement(ladder, store):
    member = make_member(store, "A1")
    record(member, store, "purchase", local(2024, 6, 1), "1240")

    evaluate(as_of=AS_OF)

    change = TierChange.objects.get(member=member)
    gold = next(t for t in change.explanation["tiers"] if t["name"] == "Gold")
    spend, orders = gold["requirements"]
    assert change.to_tier.name == "Silver"
    assert gold["reached"] is False
    assert spend["metric"] == "net_spend"
    assert Decimal(spend["value"]) == Decimal("1240")
    assert Decimal(spend["threshold"]) == Decimal("5000")
    assert spend["met"] is False
    assert spend["start"] == "2023-07-02T00:00:00+08:00"
    assert spend["end"] == AS_OF.isoformat()
    assert orders["value"] == "1"


def test_tier_since_is_evaluated_moment(ladder, store):
    member = make_member(store, "A1")
    record(member, store, "purchase", local(2024, 6, 1), "1000")
    recorded_after = timezone.now()

    evaluate(as_of=AS_OF)
    record(member, store, "refund", local(2024, 7, 1), "-500")
    evaluate(as_of=local(2024, 7, 2))

    member.refresh_from_db()
    assert member.tier.name == "Bronze"
    assert member.tier_since == local(2024, 7, 2)
    placed, dropped = reversed(TierChange.objects.filter(member=member))
    assert placed.as_of == AS_OF
    assert dropped.as_of == local(2024, 7, 2)
    # changed_at is when the row was written, not the evaluated moment.
    assert placed.changed_at >= recorded_after
    assert dropped.changed_at >= placed.changed_at


def test_unchanged_tier_keeps_tier_since(ladder, store):
    member = make_member(store, "A1")
    record(member, store, "purchase", local(2024, 6, 1), "1000")
    evaluate(as_of=AS_OF)

    evaluate(as_of=local(2024, 7, 1))

    member.refresh_from_db()
    assert member.tier_since == AS_OF


def test_second_run_records_nothing(ladder, store):
    member = make_member(store, "A1")
    record(member, store, "purchase", local(2024, 6, 1), "1000")
    evaluate(as_of=AS_OF)

    summary, changes = evaluate(as_of=AS_OF)

    assert summary.changed == 0
    assert changes == []
    assert TierChange.objects.filter(member=member).count() == 1


def test_demotion_is_recorded(ladder, store):
    member = make_member(store, "A1")
    record(member, store, "purchase", local(2024, 6, 1), "1000")
    evaluate(as_of=AS_OF)
    record(member, store, "refund", local(2024, 6, 2), "-500")

    summary, _ = evaluate(as_of=AS_OF)

    assert summary.demoted == 1
    latest = TierChange.objects.filter(member=member).first()
    assert latest.reason == TierChange.Reason.DEMOTION
    assert latest.from_tier.name == "Silver"
    assert latest.to_tier.name == "Bronze"


def test_dry_run_writes_nothing(ladder, store):
    member = make_member(store, "A1")
    record(member, store, "purchase", local(2024, 6, 1), "1000")

    summary, evaluations = evaluate(as_of=AS_OF, commit=False)

    assert summary.initial == 1
    assert evaluations[0].tier.name == "Silver"
    member.refresh_from_db()
    assert member.tier is None
    assert not TierChange.objects.exists()


def test_no_tiers_raises_clear_error(store):
    make_member(store, "A1")

    with pytest.raises(LadderError, match="No published rule version is in effect"):
        evaluate(as_of=AS_OF)


def _queries_for(member_count: int, store) -> int:
    for number in range(member_count):
        member = make_member(store, f"Q{member_count}-{number}")
        record(member, store, "purchase", local(2024, 6, 1), str(500 * (number % 4)))
    with CaptureQueriesContext(connection) as captured:
        evaluate(as_of=AS_OF)
    return len(captured)


def test_query_count_independent_of_members(ladder, store):
    # version in effect, groups, requirements, tier rules, kinds, weights,
    # members chunk, ledger aggregate, overrides in force, savepoint,
    # SELECT ... FOR UPDATE of the members to write, UPDATE per target tier
    # (Bronze, Silver), INSERT history, release savepoint, empty next chunk
    few = _queries_for(4, store)
    TierChange.objects.all().delete()
    many = _queries_for(40, store)

    assert few == many == 16


def test_each_chunk_costs_fixed_queries(ladder, store, django_assert_num_queries):
    for number in range(6):
        make_member(store, f"C{number}")
    # 6 ladder queries, then per chunk of 2: members + aggregate + overrides +
    # savepoint + SELECT ... FOR UPDATE + one UPDATE + INSERT + release = 8,
    # three chunks, plus the empty 4th read.
    with django_assert_num_queries(6 + 3 * 8 + 1):
        evaluate(as_of=AS_OF, chunk_size=2)


def test_command_evaluates_as_of_date(ladder, store):
    member = make_member(store, "A1")
    record(member, store, "purchase", local(2024, 6, 30, 23, 0), "1000")

    call_command("evaluate_tiers", "--as-of", "2024-06-29")
    assert tier_of(member) == "Bronze"

    call_command("evaluate_tiers", "--as-of", "2024-06-30")
    assert tier_of(member) == "Silver"


def test_command_dry_run_reports_without_writing(ladder, store, capsys):
    member = make_member(store, "A1")
    record(member, store, "purchase", local(2024, 6, 1), "1000")

    call_command("evaluate_tiers", "--as-of", "2024-06-30", "--dry-run")

    output = capsys.readouterr().out
    assert "would change 1" in output
    assert "Silver: 1" in output
    member.refresh_from_db()
    assert member.tier is None


def test_command_rejects_bad_date(ladder):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="not a date"):
        call_command("evaluate_tiers", "--as-of", "30/06/2024")


def test_tier_choices_use_ranks_not_ids(store):
    # Ranks decide the order even when the higher tier was created first.
    top = Tier.objects.create(name="Top", rank=50)
    base = Tier.objects.create(name="Base", rank=1)
    publish_spec(
        VersionSpec(
            tiers=[
                TierSpec(top, all_of(Need("orders", 1, window="lifetime"))),
                TierSpec(base),
            ]
        )
    )
    member = make_member(store, "A1")
    record(member, store, "purchase", local(2024, 6, 1), "1")

    evaluate(as_of=AS_OF)

    assert tier_of(member) == "Top"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "is not a date"),
        ("0001-01-01", "is before 1990-01-01"),
        ("1900-01-01", "is before 1990-01-01"),
        ("2999-01-01", "is in the future"),
    ],
)
def test_command_rejects_unusable_dates(ladder, value, message):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match=message):
        call_command("evaluate_tiers", "--as-of", value, "--dry-run")


def test_command_accepts_today(ladder, store, capsys):
    from django.utils import timezone

    call_command(
        "evaluate_tiers", "--as-of", timezone.localdate().isoformat(), "--dry-run"
    )

    assert "Evaluated 0 members" in capsys.readouterr().out


def test_keep_changes_off_still_writes(ladder, store):
    spender = make_member(store, "KEEP-1")
    record(spender, store, "purchase", local(2026, 5, 1), "1000")
    idle = make_member(store, "KEEP-2")

    summary, kept = evaluate(as_of=local(2026, 6, 1), keep_changes=False)

    spender.refresh_from_db()
    idle.refresh_from_db()
    assert kept == []
    assert summary.evaluated == 2
    assert summary.initial == 2
    assert spender.tier == ladder["silver"]
    assert idle.tier == ladder["bronze"]
    assert TierChange.objects.count() == 2
