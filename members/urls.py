from django.urls import path

from members import views

app_name = "members"

urlpatterns = [
    # The token is made by members.links.member_token(), never by hand.
    path("m/<str:token>/", views.member_page, name="page"),
]
