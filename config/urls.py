from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config import api_urls

urlpatterns = [
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("webhooks/", include("channels.urls")),
    path("", include("campaigns.urls")),
    path("customers/", include("customers.urls")),
    path("segments/", include("segments.urls")),
    path("outbox/", include("channels.outbox_urls")),
    path("deliveries/", include("channels.delivery_urls")),
    path("", include("campaigns.public_urls")),
]
if settings.CHORUS_SANDBOX:
    urlpatterns.append(path("sandbox/", include("channels.sandbox_urls")))
urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
