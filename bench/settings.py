"""Settings for the load benchmarks: the product's, plus the hello views' URLs.

    DJANGO_SETTINGS_MODULE=bench.settings .venv/bin/gunicorn crm.wsgi ...

The hello views exist only here, never in the product's URLs.
"""

from crm.settings import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
