"""System checks on job queue settings."""

from __future__ import annotations

from django.test import override_settings

from crm.checks import check_job_queue_timeouts


def test_timeout_below_retry_passes():
    with override_settings(Q_CLUSTER={"timeout": 600, "retry": 900}):
        assert check_job_queue_timeouts() == []


def test_timeout_equal_to_retry_fails():
    with override_settings(Q_CLUSTER={"timeout": 900, "retry": 900}):
        (error,) = check_job_queue_timeouts()

    assert error.id == "crm.E001"
    assert "timeout (900 s) must be below retry (900 s)" in error.msg


def test_timeout_above_retry_fails():
    with override_settings(Q_CLUSTER={"timeout": 1200, "retry": 60}):
        assert len(check_job_queue_timeouts()) == 1
