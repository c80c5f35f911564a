"""The Django admin as Chorus uses it: Admins and Brand managers get in by role, not by a staff flag."""

from __future__ import annotations

from django.contrib.admin import AdminSite
from django.contrib.admin.apps import AdminConfig
from django.http import HttpRequest

from config.roles import ADMIN, BRAND_MANAGER

ADMIN_ROLES = (ADMIN, BRAND_MANAGER)


class ChorusAdminSite(AdminSite):
    site_header = "Chorus administration"
    site_title = "Chorus admin"

    def has_permission(self, request: HttpRequest) -> bool:
        """Staff as usual, and every active user holding a role that keeps guidelines in the admin.

        What each may see and change there still comes from the role's model permissions.
        """
        user = request.user
        if not user.is_active:
            return False
        return user.is_staff or user.groups.filter(name__in=ADMIN_ROLES).exists()


class ChorusAdminConfig(AdminConfig):
    default_site = "config.admin.ChorusAdminSite"
