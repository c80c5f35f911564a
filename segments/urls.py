from django.urls import path

from segments import views

app_name = "segments"
urlpatterns = [
    path("", views.segment_list, name="list"),
    path("<int:pk>/", views.segment_detail, name="detail"),
    path("<int:pk>/count/", views.segment_member_count, name="count"),
]
