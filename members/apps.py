from django.apps import AppConfig
from django.core import checks


class MembersConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "members"

    def ready(self) -> None:
        import members.admin_api  # noqa: F401 - registers the token admin
        from members import (  # noqa: F401 - each registers its admin pages
            admin_identity,
            admin_imports,
            admin_openings,
            admin_outbox,
        )
        from members.delivery import check_notification_settings

        checks.register(check_notification_settings)
