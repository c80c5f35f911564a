from django.urls import include, path

from campaigns import views

# The dashboard keeps a global name (LOGIN_REDIRECT_URL = "dashboard"); the
# campaign pages live in the "campaigns" namespace.
campaign_patterns = [
    path("", views.campaign_list, name="list"),
    path("<int:pk>/", views.campaign_detail, name="detail"),
    path("<int:pk>/schedule/", views.campaign_schedule, name="schedule"),
    path("<int:pk>/unschedule/", views.campaign_unschedule, name="unschedule"),
]

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("campaigns/", include((campaign_patterns, "campaigns"))),
]
