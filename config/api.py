"""Cross-app API plumbing: role permissions and JSON-only errors."""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import DataError, IntegrityError
from django.http import Http404
from rest_framework import exceptions, permissions
from rest_framework.response import Response

logger = logging.getLogger(__name__)


class RolePermissions(permissions.DjangoModelPermissions):
    """Model permissions from the user's role groups, reads included.

    DRF's default lets any authenticated user read; Chorus requires the
    ``view_<model>`` permission so a role without it sees nothing. Views
    without a queryset (actions) fall back to ``required_permission``.
    """

    perms_map = {
        **permissions.DjangoModelPermissions.perms_map,
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": [],
    }

    def has_permission(self, request, view):
        if not request.user or not request.user.is_authenticated:
            return False
        required = getattr(view, "required_permission", None)
        if required is not None:
            return request.user.has_perm(required)
        return super().has_permission(request, view)


def exception_handler(exc, context):
    """DRF's handler, extended so model validation and integrity errors are 400 JSON."""
    # Imported here: this module is loaded while rest_framework.views initialises.
    from rest_framework.views import exception_handler as drf_exception_handler

    if isinstance(exc, ValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        if "__all__" in detail:
            detail["non_field_errors"] = detail.pop("__all__")
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, IntegrityError):
        logger.warning("API integrity error: %s", exc)
        exc = exceptions.ValidationError({"detail": ["This conflicts with a record that already exists."]})
    elif isinstance(exc, DataError):
        # A value the database refuses (out of range, NUL byte) that validation let through.
        logger.warning("API data error: %s", exc)
        exc = exceptions.ValidationError({"detail": ["A value is out of range or contains characters not allowed."]})
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Unhandled API error", exc_info=exc)
        response = Response({"detail": "Internal server error."}, status=500)
    return response
