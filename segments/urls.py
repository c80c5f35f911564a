from django.urls import path

from segments import views

app_name = "segments"
urlpatterns = [
    path("", views.segment_list, name="list"),
    path("new/", views.segment_new, name="new"),
    path("builder/preview/", views.builder_preview, name="builder_preview"),
    path("builder/update/", views.builder_update, name="builder_update"),
    path("<int:pk>/", views.segment_detail, name="detail"),
    path("<int:pk>/edit/", views.segment_edit, name="edit"),
    path("<int:pk>/delete/", views.segment_delete_view, name="delete"),
    path("<int:pk>/count/", views.segment_member_count, name="count"),
    path("<int:pk>/export.csv", views.segment_export, name="export"),
    path("<int:pk>/members/upload/", views.segment_upload, name="upload"),
    path("<int:pk>/explain/", views.segment_explain_search, name="explain_search"),
    path("<int:pk>/explain/<int:customer_pk>/", views.segment_explain, name="explain"),
]
