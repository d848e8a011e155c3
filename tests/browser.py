"""Fixtures for tests that drive Debian's chromium through Playwright.

Loaded as a pytest plugin from tests/conftest.py.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from django.db import connections

CHROMIUM = "/usr/bin/chromium"
# Flags for headless chromium as root on a machine without outside network:
# without the background-networking ones it keeps trying to reach Google.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def allow_orm_beside_playwright(monkeypatch):
    """Let the ORM run while Playwright's sync API has an event loop running.

    Django rejects ORM calls from a thread with a running loop unless
    DJANGO_ALLOW_ASYNC_UNSAFE is set. The variable is set per test, because a
    module-level setting would reach every later test and its subprocesses,
    and `manage.py check --deploy` fails on it.
    """
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def chromium(allow_orm_beside_playwright):
    """Yield a headless chromium; skip without it locally, fail without it in CI."""
    if not Path(CHROMIUM).exists():
        message = f"{CHROMIUM} is missing; install Debian's chromium package."
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
        # ORM calls made while Playwright runs get their own connections,
        # which Django's teardown does not see. Left open, they stop
        # PostgreSQL from dropping the test database at the end of the run.
        connections.close_all()
