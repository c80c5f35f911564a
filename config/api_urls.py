from django.urls import path
from rest_framework.routers import DefaultRouter

from campaigns.api import BrandViewSet, CampaignViewSet, TemplateRenderView, TemplateViewSet
from customers.api.customers import CustomerBulkView, CustomerConsentsView, CustomerTimelineView, CustomerViewSet
from customers.api.events import EventsView
from customers.api.imports import ImportCollectionView, ImportDetailView, ImportErrorsView
from customers.api.personas import PersonaViewSet
from customers.api.privacy import CustomerEraseView, CustomerExportView, CustomerMergeView
from segments.api import SegmentViewSet

router = DefaultRouter()
router.register("customers", CustomerViewSet)
router.register("personas", PersonaViewSet)
router.register("segments", SegmentViewSet)
router.register("campaigns", CampaignViewSet)
router.register("brands", BrandViewSet)
router.register("templates", TemplateViewSet)
urlpatterns = [
    path("customers/bulk", CustomerBulkView.as_view(), name="customer-bulk"),
    path("customers/import", ImportCollectionView.as_view(), name="customer-import"),
    path("customers/import/<int:pk>", ImportDetailView.as_view(), name="customer-import-detail"),
    path("customers/import/<int:pk>/errors", ImportErrorsView.as_view(), name="customer-import-errors"),
    path("customers/<int:pk>/timeline", CustomerTimelineView.as_view(), name="customer-timeline"),
    path("customers/<int:pk>/consents", CustomerConsentsView.as_view(), name="customer-consents"),
    path("events", EventsView.as_view(), name="events"),
    path("customers/<int:pk>/merge", CustomerMergeView.as_view(), name="customer-merge"),
    path("customers/<int:pk>/export", CustomerExportView.as_view(), name="customer-export"),
    path("customers/<int:pk>/erase", CustomerEraseView.as_view(), name="customer-erase"),
    path("templates/<int:pk>/render", TemplateRenderView.as_view(), name="template-render"),
    *router.urls,
]
