from django.urls import path

from members import import_views, views

app_name = "members"

urlpatterns = [
    # The token is made by members.links.member_token(), never by hand.
    path("m/<str:token>/", views.member_page, name="page"),
    # Large imports that run in the background (staff with members.import).
    path("staff/imports/", import_views.large_import, name="large-import"),
    path(
        "staff/imports/<int:batch_id>/",
        import_views.large_import_status,
        name="large-import-status",
    ),
    path(
        "staff/imports/<int:batch_id>/confirm/",
        import_views.large_import_confirm,
        name="large-import-confirm",
    ),
    path(
        "staff/imports/<int:batch_id>/progress/",
        import_views.large_import_progress,
        name="large-import-progress",
    ),
]
