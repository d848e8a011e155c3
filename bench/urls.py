"""The product's URLs plus two hello views, the baselines of the load benchmarks.

Both views run behind every middleware of the product, and the POST view has
the event API's authentication, permission, parser and throttle classes, so
the difference to a real page or event is the work of the view itself.
"""

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import include, path
from django.views.decorators.http import require_safe
from rest_framework.request import Request
from rest_framework.response import Response

from members.api import ChannelAPIView


@require_safe
def hello(request: HttpRequest) -> HttpResponse:
    """Return a fixed text, through the same middleware as the member page."""
    return HttpResponse("hello", content_type="text/plain")


class HelloPostView(ChannelAPIView):
    """Accept a JSON body with a channel token, and record nothing."""

    def post(self, request: Request) -> Response:
        return Response({"received": isinstance(request.data, dict)}, status=201)


urlpatterns: list[Any] = [
    path("bench/hello/", hello, name="bench-hello"),
    path("bench/hello-post/", HelloPostView.as_view(), name="bench-hello-post"),
    path("", include("crm.urls")),
]
