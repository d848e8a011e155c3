"""Settings for the membership tier CRM, read from the environment.

Every value comes from an environment variable with a development default, except
in production (``CRM_ENV=production``), where a missing secret key or host list
stops the process at start-up instead of running with an unsafe default.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use 1 or 0.")


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env_str(name, default).split(",") if item.strip()]


CRM_ENV = env_str("CRM_ENV", "development")
if CRM_ENV not in {"development", "test", "production"}:
    raise ImproperlyConfigured(
        f"CRM_ENV={CRM_ENV!r} is invalid; use development, test or production."
    )
PRODUCTION = CRM_ENV == "production"

# Production refuses the development key, an empty key and short keys, so a
# forgotten variable cannot ship a guessable session and link-signing secret.
_DEVELOPMENT_SECRET_KEY = "django-insecure-development-only-key-never-use-in-production"  # noqa: S105
SECRET_KEY = env_str("SECRET_KEY", "" if PRODUCTION else _DEVELOPMENT_SECRET_KEY)
if PRODUCTION and (
    len(SECRET_KEY) < 50
    or SECRET_KEY.startswith("django-insecure")
    or len(set(SECRET_KEY)) < 5
):
    raise ImproperlyConfigured(
        "SECRET_KEY is missing or weak. Set it to a random value of at least 50 "
        "characters, for example the output of "
        "`python -c 'import secrets; print(secrets.token_urlsafe(64))'`."
    )

# Key of the HMAC that turns an erased person's channel ids, phone and e-mail
# into tombstones. It is separate from SECRET_KEY so that rotating the
# session key does not let erased people back in through an old import file.
CRM_ERASURE_KEY = env_str(
    "CRM_ERASURE_KEY", "" if PRODUCTION else "development-only-erasure-key"
)
if PRODUCTION and len(CRM_ERASURE_KEY) < 32:
    raise ImproperlyConfigured(
        "CRM_ERASURE_KEY is missing or shorter than 32 characters. Set it to a "
        "random value and never change it, or erased members' tombstones stop "
        "matching."
    )

DEBUG = env_bool("DEBUG", default=not PRODUCTION)
if PRODUCTION and DEBUG:
    raise ImproperlyConfigured("DEBUG must be off when CRM_ENV=production.")

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "" if PRODUCTION else "127.0.0.1,localhost")
if PRODUCTION and not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "ALLOWED_HOSTS is empty. Set it to the host names the site is served on, "
        "separated by commas."
    )
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "import_export",
    "django_q",
    "simple_history",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "crm",
    "members",
    "tiers",
    "benefits",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Rejects oversized request bodies before CsrfViewMiddleware parses them.
    "members.importing.sizes.RequestSizeLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "crm.two_factor.RequireTwoFactorMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Replaces the response to a login that AxesStandaloneBackend flagged as
    # locked out with the lockout page (HTTP 429).
    "axes.middleware.AxesMiddleware",
]

# AxesStandaloneBackend comes first: it rejects a locked-out username and IP
# pair before ModelBackend checks the password.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# django-axes counts failed logins per username and client IP together and
# locks that pair out after AXES_FAILURE_LIMIT failures for
# CRM_LOGIN_COOLOFF_MINUTES. A locked pair cannot log in even with the right
# password. The client IP is REMOTE_ADDR: behind a proxy every client shares
# the proxy's address, so configure the proxy to pass the real one.
AXES_ENABLED = env_bool("AXES_ENABLED", default=True)
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = dt.timedelta(minutes=env_int("CRM_LOGIN_COOLOFF_MINUTES", 15))
if AXES_FAILURE_LIMIT < 1 or AXES_COOLOFF_TIME <= dt.timedelta(0):
    raise ImproperlyConfigured(
        "AXES_FAILURE_LIMIT and CRM_LOGIN_COOLOFF_MINUTES must be at least 1."
    )
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_LOCKOUT_CALLABLE = "crm.two_factor.lockout_response"
AXES_RESET_ON_SUCCESS = True
# Successful logins are not stored. Failed attempts are stored with the
# username and IP until the cool-off ends or `manage.py axes_reset` clears them.
AXES_DISABLE_ACCESS_LOG = True
AXES_ENABLE_ACCESS_FAILURE_LOG = False

# Two-factor authentication with TOTP devices (django-otp). Staff with a
# confirmed device enter its 6-digit code at login. With CRM_REQUIRE_2FA on,
# staff who hold members.import or members.export can open no staff page but
# the enrolment page until they have verified a device in their session.
CRM_REQUIRE_2FA = env_bool("CRM_REQUIRE_2FA", default=PRODUCTION)
OTP_TOTP_ISSUER = env_str("CRM_OTP_ISSUER", "Tier CRM")

if PRODUCTION:
    # Serves collected static files from the app server; development relies on
    # runserver's own static handling instead.
    MIDDLEWARE.insert(1, "whitenoise.middleware.WhiteNoiseMiddleware")

ROOT_URLCONF = "crm.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.i18n",
                "crm.context_processors.program",
            ],
        },
    },
]

WSGI_APPLICATION = "crm.wsgi.application"

# SQLite by default so a new checkout runs without a server; DATABASE_URL
# (postgres://user@host:port/name) selects PostgreSQL through psycopg 3.
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Wait for a concurrent writer (the job cluster beside the web server)
    # instead of failing at once with "database is locked". A deferred
    # transaction that reads and then writes cannot wait: SQLite refuses its
    # upgrade to a write lock at once, so every transaction takes the write
    # lock when it begins. WAL lets pages read while the cluster writes.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        timeout=20,
        transaction_mode="IMMEDIATE",
        init_command="PRAGMA journal_mode=WAL;",
    )

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = env_str("LANGUAGE_CODE", "zh-hans")
LANGUAGES = [("zh-hans", "简体中文"), ("en", "English")]
LOCALE_PATHS = [BASE_DIR / "locale"]
USE_I18N = True
USE_TZ = True
# The program's time zone: naive times in imports are read in it, and the
# "calendar year" and "last N days" windows start at its midnight.
TIME_ZONE = env_str("CRM_TIME_ZONE", "Asia/Shanghai")
# The largest amount one activity may carry, in the program's currency.
# Imports, the event API and the admin reject anything above it as a likely
# typing or export error.
CRM_MAX_ACTIVITY_AMOUNT = env_int("CRM_MAX_ACTIVITY_AMOUNT", 1_000_000)
# ISO 4217 code of the only currency that amounts are accepted in.
CRM_CURRENCY = env_str("CRM_CURRENCY", "CNY").upper()
# Region used to read phone numbers written without a country code.
CRM_PHONE_REGION = env_str("CRM_PHONE_REGION", "CN").upper()
# How long a signed member page link stays valid, in days.
CRM_MEMBER_LINK_MAX_AGE_DAYS = env_int("CRM_MEMBER_LINK_MAX_AGE_DAYS", 30)
# Members evaluated per chunk: each chunk costs a fixed number of queries.
CRM_EVALUATION_CHUNK_SIZE = env_int("CRM_EVALUATION_CHUNK_SIZE", 5000)
# Shown on member pages when the data is a shifted historical demo set.
CRM_DATA_NOTICE = env_str("CRM_DATA_NOTICE")

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(BASE_DIR / "media")))

# Upload limits. Every import form checks the file's size against one of the
# CRM_IMPORT_*MAX_BYTES settings below before it reads the file.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 10 * 1024 * 1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = env_int("FILE_UPLOAD_MAX_MEMORY_SIZE", 5 * 1024 * 1024)
CRM_IMPORT_MAX_BYTES = env_int("CRM_IMPORT_MAX_BYTES", 50 * 1024 * 1024)
CRM_IMPORT_MAX_ROWS = env_int("CRM_IMPORT_MAX_ROWS", 200_000)
# The admin's import page previews files in the request, up to this size;
# larger ones go to its background import.
CRM_IMPORT_ADMIN_MAX_BYTES = env_int("CRM_IMPORT_ADMIN_MAX_BYTES", 5 * 1024 * 1024)
# Files read in chunks (CSV from the commands, and the admin's background
# import) have their own, larger limits; the job's timeout must fit them.
CRM_IMPORT_STREAMING_MAX_BYTES = env_int(
    "CRM_IMPORT_STREAMING_MAX_BYTES", 1024 * 1024 * 1024
)
CRM_IMPORT_STREAMING_MAX_ROWS = env_int("CRM_IMPORT_STREAMING_MAX_ROWS", 2_000_000)
# The largest request body accepted at all, in bytes: larger uploads get 413
# before they are read. It leaves 1 MiB above the largest import for the
# other form fields.
CRM_UPLOAD_MAX_BYTES = env_int(
    "CRM_UPLOAD_MAX_BYTES", CRM_IMPORT_STREAMING_MAX_BYTES + 1024 * 1024
)
CRM_IMPORT_TASK_TIMEOUT = env_int("CRM_IMPORT_TASK_TIMEOUT", 3 * 60 * 60)
# Seconds a job that evaluates every member (re-evaluation after a publish,
# the nightly reviews, the nightly outlook refresh) may run before django-q2
# stops it. The first evaluation of 1,000,000 members took about 32 minutes
# on a 2-core machine (docs/benchmarks.md).
CRM_EVALUATION_TASK_TIMEOUT = env_int("CRM_EVALUATION_TASK_TIMEOUT", 3 * 60 * 60)
# An XLSX is refused before it is opened when its parts would inflate past
# this many bytes, or by more than this ratio, because zip bombs do both.
# 100 MiB fits CRM_IMPORT_MAX_ROWS: 200,000 rows of six columns written by
# openpyxl 3.1 (inline strings) unpack to 66 MiB for activities and 72 MiB
# for members, measured with 10-character ids and references.
CRM_XLSX_MAX_UNCOMPRESSED_BYTES = env_int(
    "CRM_XLSX_MAX_UNCOMPRESSED_BYTES", 100 * 1024 * 1024
)
CRM_XLSX_MAX_COMPRESSION_RATIO = env_int("CRM_XLSX_MAX_COMPRESSION_RATIO", 200)
# openpyxl reads an XLSX's whole shared-string table into memory. With
# openpyxl 3.1.5, 3.5 million 10-character strings (87 MiB of XML) made a
# streamed import grow by 572 MiB, about 6.6 bytes per byte of XML, measured
# with the child-process probe of tests/test_upload_limits.py. 12 MiB keeps
# that under 100 MiB and fits about 450,000 distinct short texts. Larger
# files can be imported as CSV.
CRM_XLSX_MAX_SHARED_STRINGS_BYTES = env_int(
    "CRM_XLSX_MAX_SHARED_STRINGS_BYTES", 12 * 1024 * 1024
)

# django-import-export: explicit permission codes for import and export, and
# every import in one transaction so a failure saves nothing.
IMPORT_EXPORT_IMPORT_PERMISSION_CODE = "import"
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "export"
IMPORT_EXPORT_USE_TRANSACTIONS = True
IMPORT_EXPORT_SKIP_ADMIN_LOG = True
IMPORT_EXPORT_IMPORT_IGNORE_BLANK_LINES = True
# Our export formats quote formula-like text cells themselves (see
# members.importing.formats), so the library's own stripping stays off.
IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT = False
IMPORT_EXPORT_ESCAPE_HTML_ON_EXPORT = True

# django-q2 runs background jobs on the ORM broker, so no extra server is
# needed; REDIS_URL switches the broker to Redis. A job is retried after
# `retry` seconds, so `timeout` must stay below it or a slow job runs twice.
Q_CLUSTER: dict[str, object] = {
    "name": "crm",
    "workers": env_int("Q_WORKERS", 2),
    "timeout": env_int("Q_TIMEOUT", 600),
    "retry": env_int("Q_RETRY", 900),
    "max_attempts": env_int("Q_MAX_ATTEMPTS", 3),
    "queue_limit": 50,
    "bulk": 10,
    "catch_up": False,
    "orm": "default",
}
if env_str("REDIS_URL"):
    Q_CLUSTER.pop("orm")
    Q_CLUSTER["redis"] = env_str("REDIS_URL")

# The cache is shared by the web and job processes: a background import
# writes its progress there while its own transaction is still open. Files
# on one host by default, Redis when REDIS_URL is set.
CACHES: dict[str, dict[str, object]] = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": env_str("REDIS_URL"),
        }
        if env_str("REDIS_URL")
        else {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": env_str("CRM_CACHE_DIR", str(BASE_DIR / "var" / "cache")),
        }
    )
}

REST_FRAMEWORK = {
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

# OpenAPI schema at /api/schema/ and Swagger UI at /api/docs/, both readable
# without logging in: they describe the API and contain no data. Swagger UI's
# files come from drf-spectacular-sidecar, so the page loads nothing from a CDN.
SPECTACULAR_SETTINGS = {
    "TITLE": "Membership tier CRM API",
    "DESCRIPTION": (
        "Channels push member activity and read a member's tier. Event and "
        "member endpoints take a channel token: `Authorization: Bearer <token>`, "
        "made by `manage.py create_channel_token`."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
}
# Event API limits: events per batch request, and bytes per request body. A
# larger body is rejected with 413 before it is read.
CRM_API_MAX_BATCH = env_int("CRM_API_MAX_BATCH", 1000)
CRM_API_MAX_REQUEST_BYTES = env_int("CRM_API_MAX_REQUEST_BYTES", 1024 * 1024)
# Requests each channel token may make, as DRF writes rates ("1200/min");
# empty turns the limit off. A batch of events is one request.
CRM_API_TOKEN_RATE = env_str("CRM_API_TOKEN_RATE", "1200/min")
# Days an Idempotency-Key's stored response is kept for retries.
CRM_IDEMPOTENCY_KEY_DAYS = env_int("CRM_IDEMPOTENCY_KEY_DAYS", 30)
# Look-ups by phone or e-mail each staff user without the personal data
# permission may make per clock hour; 0 turns the limit off.
CRM_LOOKUP_LIMIT_PER_HOUR = env_int("CRM_LOOKUP_LIMIT_PER_HOUR", 30)

# Production hardening, checked by `manage.py check --deploy`.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = PRODUCTION
CSRF_COOKIE_SECURE = PRODUCTION
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", default=PRODUCTION)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31_536_000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = PRODUCTION
SECURE_HSTS_PRELOAD = PRODUCTION
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    # Masks phones and e-mail addresses in every message (crm/logging.py).
    # Every handler added here needs the filter too.
    "filters": {
        "mask_personal_data": {"()": "crm.logging.MaskPersonalDataFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["mask_personal_data"],
        },
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django's own "django" and "django.server" (runserver's request
        # log) loggers have handlers of their own without the filter, so
        # they log through the masked console handler here instead. Error
        # e-mails to ADMINS are not sent, because they carry request data.
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        "django.server": {
            "handlers": ["console"],
            "level": "INFO",
            "propagate": False,
        },
    },
}

# Review settings
CRM_REVIEW_WARNING_DAYS = env_int("CRM_REVIEW_WARNING_DAYS", 30)
# The admin dashboard: a member of a tier without activity in this many days
# counts as churned, and the figures are computed again after this many
# seconds.
CRM_CHURN_DAYS = env_int("CRM_CHURN_DAYS", 90)
CRM_DASHBOARD_CACHE_SECONDS = env_int("CRM_DASHBOARD_CACHE_SECONDS", 300)
# The work queues: a member within this share (%) of the next tier's
# requirements is near promotion, and the pace projection uses the activity
# of this many recent days.
CRM_NEAR_PROMOTION_PERCENT = env_int("CRM_NEAR_PROMOTION_PERCENT", 80)
CRM_OUTLOOK_PACE_DAYS = env_int("CRM_OUTLOOK_PACE_DAYS", 90)

# Benefits: days before a grant expires that the member is sent a reminder.
CRM_BENEFIT_EXPIRY_WARNING_DAYS = env_int("CRM_BENEFIT_EXPIRY_WARNING_DAYS", 7)

# Notifications. Every message goes out on each backend named here:
# "in_app" (shown on the member page), "email" (Django's mail framework, with
# the EMAIL_* settings below) and "webhook" (a signed POST to CRM_WEBHOOK_URL,
# for SMS gateways, WeChat and other channels).
CRM_NOTIFICATION_BACKENDS = env_list("CRM_NOTIFICATION_BACKENDS", "in_app,email")
CRM_WEBHOOK_URL = env_str("CRM_WEBHOOK_URL")
# HMAC-SHA256 key the webhook receiver verifies the X-CRM-Signature header with.
CRM_WEBHOOK_SECRET = env_str("CRM_WEBHOOK_SECRET")
CRM_WEBHOOK_TIMEOUT_SECONDS = env_int("CRM_WEBHOOK_TIMEOUT_SECONDS", 10)
# A failed send is retried after CRM_NOTIFICATION_RETRY_SECONDS, then after
# twice as long each time up to CRM_NOTIFICATION_RETRY_MAX_SECONDS, and marked
# failed after CRM_NOTIFICATION_MAX_ATTEMPTS attempts.
CRM_NOTIFICATION_MAX_ATTEMPTS = env_int("CRM_NOTIFICATION_MAX_ATTEMPTS", 8)
CRM_NOTIFICATION_RETRY_SECONDS = env_int("CRM_NOTIFICATION_RETRY_SECONDS", 60)
CRM_NOTIFICATION_RETRY_MAX_SECONDS = env_int(
    "CRM_NOTIFICATION_RETRY_MAX_SECONDS", 6 * 3600
)
# Messages a sender claims at a time. A claim older than the timeout counts as
# abandoned (its run was stopped) and is sent again, so the timeout must exceed
# the time a batch can take: batch size times the slowest send's timeout.
CRM_NOTIFICATION_BATCH_SIZE = env_int("CRM_NOTIFICATION_BATCH_SIZE", 20)
CRM_NOTIFICATION_CLAIM_TIMEOUT_SECONDS = env_int(
    "CRM_NOTIFICATION_CLAIM_TIMEOUT_SECONDS", 900
)
# Tier changes and review warnings older than this many days get no message,
# so turning notifications on does not send news about the distant past.
CRM_NOTIFICATION_MAX_AGE_DAYS = env_int("CRM_NOTIFICATION_MAX_AGE_DAYS", 7)

# Outgoing e-mail. Development prints messages to the console.
EMAIL_BACKEND = env_str(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if PRODUCTION
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_HOST = env_str("EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS")
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL")
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "webmaster@localhost")
