from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from members import admin_rights
from members import api as members_api
from tiers import admin_dashboard

urlpatterns = [
    # The admin home with the operations dashboard, and the dashboard page.
    # They come first, so /admin/ reaches them before the stock index.
    path("admin/", include(admin_dashboard.urlpatterns)),
    # Member data export and erasure, beside the member's change page.
    path("admin/", include(admin_rights.urlpatterns)),
    path("admin/", admin.site.urls),
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("members.urls")),
    path("", include("benefits.urls")),
    path("api/v1/events/", members_api.EventView.as_view(), name="api-events"),
    path(
        "api/v1/events/batch/",
        members_api.EventBatchView.as_view(),
        name="api-events-batch",
    ),
    path(
        "api/v1/members/<uuid:public_id>/",
        members_api.MemberTierView.as_view(),
        name="api-member-tier",
    ),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="api-schema"),
        name="api-docs",
    ),
]
