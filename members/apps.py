from typing import Any

from django.apps import AppConfig, apps
from django.core import checks
from django.db.models.signals import post_migrate


def _sync_roles_after_migrate(using: str = "default", **kwargs: Any) -> None:
    """Create or update the role groups once every app's permissions exist.

    post_migrate runs once per app, in INSTALLED_APPS order, so the
    permissions of apps listed after this one are created here first.
    """
    from django.contrib.auth.management import create_permissions

    from members.roles import sync_roles

    for app_config in apps.get_app_configs():
        create_permissions(app_config, verbosity=0, using=using)
    sync_roles(using=using)


class MembersConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "members"

    def ready(self) -> None:
        from django.contrib import admin

        import members.admin_api  # noqa: F401 - registers the token admin
        from crm import two_factor
        from members import (  # noqa: F401 - each registers its admin pages
            admin_audit,
            admin_identity,
            admin_imports,
            admin_openings,
            admin_outbox,
        )
        from members.delivery import check_notification_settings

        checks.register(check_notification_settings)
        two_factor.install(admin.site)
        post_migrate.connect(
            _sync_roles_after_migrate,
            sender=self,
            dispatch_uid="members.sync_roles",
        )
