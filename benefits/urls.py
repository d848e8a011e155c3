from django.urls import path

from benefits import api, views

app_name = "benefits"

urlpatterns = [
    path("api/v1/benefits/redemptions/", api.RedemptionView.as_view(), name="redeem"),
    path(
        "api/v1/members/<uuid:public_id>/grants/",
        api.MemberGrantsView.as_view(),
        name="member-grants",
    ),
    # The token is the member page's signed token (members.links).
    path("m/<str:token>/benefits/choose/", views.choose_benefit, name="choose"),
]
