"""Recipient-facing links, mounted at the site root: short links, unsubscribe, preferences, view in browser."""

from django.urls import path

from campaigns import public_views

app_name = "public"
urlpatterns = [
    path("l/<str:code>", public_views.short_link, name="short-link"),
    path("l/<str:code>/<str:token>", public_views.short_link, name="short-link-click"),
    path("u/<str:token>", public_views.unsubscribe, name="unsubscribe"),
    path("p/<str:token>", public_views.preferences, name="preferences"),
    path("m/<str:token>", public_views.view_in_browser, name="view-in-browser"),
]
