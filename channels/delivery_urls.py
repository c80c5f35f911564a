from django.urls import path

from channels import views

app_name = "deliveries"
urlpatterns = [
    path("failed/", views.failed_list, name="failed"),
    path("failed/retry/", views.failed_retry, name="retry"),
]
