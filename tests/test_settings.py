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


def read_settings(*names: str, **env: str) -> list[str]:
    """Return the repr of each named setting in a fresh process with ``env``."""
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE']='crm.settings';"
        "django.setup(); from django.conf import settings as s;"
        f"print('|'.join(repr(getattr(s, name)) for name in {list(names)!r}))"
    )
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CRM_", "DATABASE_URL", "AXES_", "SECRET_KEY"))
    }
    environment["CRM_ERASURE_KEY"] = ERASURE_KEY
    environment.update(env)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1].split("|")


def test_login_throttle_defaults():
    enabled, limit, cooloff, parameters = read_settings(
        "AXES_ENABLED",
        "AXES_FAILURE_LIMIT",
        "AXES_COOLOFF_TIME",
        "AXES_LOCKOUT_PARAMETERS",
    )

    assert enabled == "True"
    assert limit == "5"
    assert cooloff == "datetime.timedelta(seconds=900)"
    assert parameters == "[['username', 'ip_address']]"


def test_login_throttle_from_environment():
    enabled, limit, cooloff = read_settings(
        "AXES_ENABLED",
        "AXES_FAILURE_LIMIT",
        "AXES_COOLOFF_TIME",
        AXES_ENABLED="0",
        AXES_FAILURE_LIMIT="3",
        CRM_LOGIN_COOLOFF_MINUTES="60",
    )

    assert enabled == "False"
    assert limit == "3"
    assert cooloff == "datetime.timedelta(seconds=3600)"


def test_zero_failure_limit_refused():
    result = run_check(AXES_FAILURE_LIMIT="0")

    assert result.returncode != 0
    assert "AXES_FAILURE_LIMIT and CRM_LOGIN_COOLOFF_MINUTES" in result.stderr


def test_two_factor_off_in_development():
    (required,) = read_settings("CRM_REQUIRE_2FA")

    assert required == "False"


def test_two_factor_on_in_production():
    (required,) = read_settings(
        "CRM_REQUIRE_2FA",
        CRM_ENV="production",
        SECRET_KEY=STRONG_KEY,
        ALLOWED_HOSTS="crm.example.com",
    )

    assert required == "True"


def test_upload_cap_follows_streaming_cap():
    (cap,) = read_settings(
        "CRM_UPLOAD_MAX_BYTES", CRM_IMPORT_STREAMING_MAX_BYTES="1000"
    )

    assert cap == str(1000 + 1024 * 1024)
