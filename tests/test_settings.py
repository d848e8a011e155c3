"""Settings read from the environment; production fails closed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRONG_KEY = "k3y-" + "x7Qp9vLm2Rt8Zw4Yc6Nb1Hd5Jf0Gs3Ua" * 2
ERASURE_KEY = "e-" + "Wq3Rt5Yu7Io9Pa1Sd" * 3


def run_check(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key
        not in {
            "SECRET_KEY",
            "CRM_ENV",
            "ALLOWED_HOSTS",
            "DEBUG",
            "DATABASE_URL",
            "CRM_ERASURE_KEY",
        }
    }
    environment["CRM_ERASURE_KEY"] = ERASURE_KEY
    environment.update(env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_refuses_missing_secret_key():
    result = run_check(CRM_ENV="production", ALLOWED_HOSTS="crm.example.com")

    assert result.returncode != 0
    assert "SECRET_KEY is missing or weak" in result.stderr


def test_production_refuses_development_key():
    result = run_check(
        CRM_ENV="production",
        ALLOWED_HOSTS="crm.example.com",
        SECRET_KEY="django-insecure-" + "a1b2c3d4e5" * 5,
    )

    assert result.returncode != 0
    assert "SECRET_KEY is missing or weak" in result.stderr


def test_production_refuses_missing_erasure_key():
    result = run_check(
        CRM_ENV="production",
        SECRET_KEY=STRONG_KEY,
        ALLOWED_HOSTS="crm.example.com",
        CRM_ERASURE_KEY="",
    )

    assert result.returncode != 0
    assert "CRM_ERASURE_KEY is missing" in result.stderr


def test_production_refuses_missing_hosts():
    result = run_check(CRM_ENV="production", SECRET_KEY=STRONG_KEY)

    assert result.returncode != 0
    assert "ALLOWED_HOSTS is empty" in result.stderr


def test_production_passes_deploy_check():
    result = run_check(
        "--deploy",
        "--fail-level",
        "WARNING",
        CRM_ENV="production",
        SECRET_KEY=STRONG_KEY,
        ALLOWED_HOSTS="crm.example.com",
    )

    assert result.returncode == 0, result.stderr


def test_database_url_selects_postgresql():
    from django.conf import settings

    expected = (
        "django.db.backends.postgresql"
        if os.environ.get("DATABASE_URL", "").startswith("postgres")
        else "django.db.backends.sqlite3"
    )
    assert settings.DATABASES["default"]["ENGINE"] == expected


def test_program_defaults():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='crm.settings';"
            "django.setup(); from django.conf import settings as s;"
            "print(s.TIME_ZONE, s.CRM_CURRENCY, s.DATABASES['default']['ENGINE'])",
        ],
        cwd=ROOT,
        env={
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CRM_", "DATABASE_URL"))
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.stdout.split() == [
        "Asia/Shanghai",
        "CNY",
        "django.db.backends.sqlite3",
    ]
