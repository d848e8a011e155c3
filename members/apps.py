from django.apps import AppConfig
from django.core import checks


class MembersConfig(AppConfig):
    default_auto_field = "django.db.models.BigAutoField"
    name = "members"

    def ready(self) -> None:
        import members.admin_api  # noqa: F401 - registers the token admin
        from members import admin_outbox  # noqa: F401 - registers the outbox admin
        from members.delivery import check_notification_settings

        checks.register(check_notification_settings)
