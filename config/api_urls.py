from rest_framework.routers import DefaultRouter

from campaigns.api import CampaignViewSet
from customers.api.customers import CustomerViewSet
from segments.api import SegmentViewSet

router = DefaultRouter()
router.register("customers", CustomerViewSet)
router.register("segments", SegmentViewSet)
router.register("campaigns", CampaignViewSet)
urlpatterns = router.urls
