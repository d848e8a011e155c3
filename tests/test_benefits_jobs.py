"""The benefit job schedules, and the demo issuing its benefits once.

In the demo sample, customer 00001 buys five times in the last weeks of the
log and reaches Gold. Customer 00003 spends $420 three months before its end
and reaches Silver. Customer 00002 bought only in the first weeks and stays a
Member.
"""

from __future__ import annotations

import inspect
import zipfile
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import Client
from django.utils.module_loading import import_string
from django_q.models import Schedule

from benefits.models import Grant, ProcessedTierChange
from crm import demo
from members.links import member_page_url
from members.models import Member
from tiers.models import TierChange

SAMPLE = (
    " customer_id  date number_of_cds  dollar_value\r\n"
    " 00001 19980615  9  250.00\r\n"
    " 00001 19980616  3   90.00\r\n"
    " 00001 19980617  3   90.00\r\n"
    " 00001 19980618  3   90.00\r\n"
    " 00001 19980619  3   90.00\r\n"
    " 00002 19970112  1   12.00\r\n"
    " 00003 19980330  2  420.76\r\n"
)

SCHEDULED_TASKS = {
    "benefits-issuing": "benefits.issuing.issue_for_tier_changes",
    "benefits-stock": "benefits.issuing.issue_waiting_for_stock",
    "benefits-approvals": "benefits.approvals.approve_overdue_grants",
    "benefits-expiry": "benefits.expiry.expire_grants",
    "benefits-expiry-warnings": "benefits.expiry.warn_expiring_grants",
}


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "task"), sorted(SCHEDULED_TASKS.items()))
def test_job_is_scheduled(name, task):
    schedule = Schedule.objects.get(name=name)

    assert schedule.func == task
    assert schedule.repeats == -1
    function = import_string(task)
    required = [
        parameter
        for parameter in inspect.signature(function).parameters.values()
        if parameter.default is inspect.Parameter.empty
    ]
    assert required == []


def test_issuing_runs_every_five_minutes(db):
    schedule = Schedule.objects.get(name="benefits-issuing")

    assert schedule.schedule_type == Schedule.MINUTES
    assert schedule.minutes == 5


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    path = tmp_path / "Lifetimes-0.11.3-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(demo.CDNOW_MEMBER, SAMPLE)
    return path


def customer(external_id: str) -> Member:
    return Member.objects.select_related("tier").get(
        identities__external_id=external_id
    )


@pytest.mark.django_db
def test_load_demo_issues_benefits_once(wheel, capsys):
    call_command("load_demo", "--wheel", str(wheel))

    output = capsys.readouterr().out
    gold, silver = customer("00001"), customer("00003")
    assert gold.tier.name == "Gold"
    assert silver.tier.name == "Silver"
    assert sorted(
        Grant.objects.filter(member=gold).values_list("benefit__name", flat=True)
    ) == [
        "5% off every order",
        "Free standard shipping",
        "Gold welcome gift: CDNOW tote bag",
    ]
    assert sorted(
        Grant.objects.filter(member=silver).values_list("benefit__name", flat=True)
    ) == [
        "Free standard shipping",
        "Welcome coupon: $5 off your next order",
    ]
    assert not Grant.objects.filter(member=customer("00002")).exists()
    assert "Issued 5 benefit grants." in output
    assert ProcessedTierChange.objects.count() == TierChange.objects.count()

    call_command("load_demo", "--wheel", str(wheel))

    assert Grant.objects.count() == 5


@pytest.mark.django_db
def test_demo_member_sees_benefits(wheel):
    call_command("load_demo", "--wheel", str(wheel))
    gold = customer("00001")

    html = (
        Client().get(member_page_url(gold), HTTP_ACCEPT_LANGUAGE="en").content.decode()
    )

    assert "Gold welcome gift: CDNOW tote bag" in html
    assert "Gold pick: choose 1 of 3" in html
    assert "Signed band poster" in html
    tote = Grant.objects.get(member=gold, benefit__name__startswith="Gold welcome")
    assert tote.code in html
