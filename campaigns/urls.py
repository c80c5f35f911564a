from django.urls import include, path

from campaigns import template_views, views

# The dashboard keeps a global name (LOGIN_REDIRECT_URL = "dashboard"); the
# campaign pages live in the "campaigns" namespace, templates in "templates".
campaign_patterns = [
    path("", views.campaign_list, name="list"),
    path("<int:pk>/", views.campaign_detail, name="detail"),
    path("<int:pk>/preview/", template_views.campaign_preview, name="preview"),
    path("<int:pk>/schedule/", views.campaign_schedule, name="schedule"),
    path("<int:pk>/unschedule/", views.campaign_unschedule, name="unschedule"),
    path("<int:pk>/submit/", views.campaign_submit, name="submit"),
    path("<int:pk>/approve/", views.campaign_approve, name="approve"),
    path("<int:pk>/reject/", views.campaign_reject, name="reject"),
    path("<int:pk>/override/", views.campaign_override_finding, name="override"),
]

template_patterns = [
    path("", template_views.template_list, name="list"),
    path("new/", template_views.template_new, name="new"),
    path("customers/", template_views.preview_customers, name="customers"),
    path("<int:pk>/", template_views.template_edit, name="edit"),
    path("<int:pk>/checks/", template_views.template_checks, name="checks"),
    path("<int:pk>/blocks/", template_views.template_blocks, name="blocks"),
    path("<int:pk>/preview/", template_views.template_preview, name="preview"),
    path("<int:pk>/test-send/", template_views.template_test_send, name="test-send"),
]

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("campaigns/", include((campaign_patterns, "campaigns"))),
    path("templates/", include((template_patterns, "templates"))),
]
