from django.urls import path

from customers.views import customers as views
from customers.views import imports, personas, privacy

app_name = "customers"
urlpatterns = [
    path("", views.customer_list, name="list"),
    path("count/", views.customer_count, name="count"),
    path("<int:pk>/", views.customer_detail, name="detail"),
    path("import/", imports.import_list, name="import-list"),
    path("import/<int:pk>/", imports.import_detail, name="import-detail"),
    path("import/<int:pk>/mapping/", imports.import_mapping, name="import-mapping"),
    path("import/<int:pk>/mapping/check/", imports.import_mapping_check, name="import-mapping-check"),
    path("import/<int:pk>/progress/", imports.import_progress, name="import-progress"),
    path("import/<int:pk>/errors.csv", imports.import_errors, name="import-errors"),
    path("personas/", personas.persona_list, name="persona-list"),
    path("personas/new/", personas.persona_new, name="persona-new"),
    path("personas/check-rules/", personas.persona_rules_check, name="persona-rules-check"),
    path("personas/<slug:slug>/", personas.persona_detail, name="persona-detail"),
    path("personas/<slug:slug>/edit/", personas.persona_edit, name="persona-edit"),
    path("personas/<slug:slug>/delete/", personas.persona_remove, name="persona-delete"),
    path("personas/<slug:slug>/engagement/", personas.persona_engagement, name="persona-engagement"),
    path("<int:pk>/export/", privacy.customer_export_download, name="export"),
    path("<int:pk>/merge/", privacy.customer_merge, name="merge"),
    path("<int:pk>/erase/", privacy.customer_erase_confirm, name="erase"),
]
