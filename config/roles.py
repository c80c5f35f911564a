"""The four roles, as Django groups with model permissions.

Used by a data migration and by ``roles_ensure`` in tests; it only touches the
models it is handed, so it works with historical models too.
"""

from __future__ import annotations

ADMIN, BRAND_MANAGER, MARKETER, ANALYST = "Admin", "Brand manager", "Marketer", "Analyst"

_APPS = ("customers", "segments", "campaigns", "channels")
_ALL_ACTIONS = ("view", "add", "change", "delete")
# Campaign.Meta.permissions: approve_campaign, override_finding.
_REVIEW_ACTIONS = ("approve", "override")

# (app_label, model) -> actions, per role. "*" means every model of the app.
ROLE_PERMISSIONS: dict[str, dict[tuple[str, str], tuple[str, ...]]] = {
    ADMIN: {
        **{(app, "*"): _ALL_ACTIONS for app in _APPS},
        ("campaigns", "campaign"): (*_ALL_ACTIONS, *_REVIEW_ACTIONS),
    },
    BRAND_MANAGER: {
        **{(app, "*"): ("view",) for app in _APPS},
        ("campaigns", "brand"): _ALL_ACTIONS,
        ("campaigns", "requiredphrase"): _ALL_ACTIONS,
        ("campaigns", "smsprice"): _ALL_ACTIONS,
        ("campaigns", "campaign"): ("view", *_REVIEW_ACTIONS),
    },
    MARKETER: {
        **{(app, "*"): ("view",) for app in _APPS},
        ("customers", "customer"): ("view", "add", "change"),
        ("customers", "consent"): ("view", "add"),
        ("customers", "activity"): ("view", "add"),
        ("customers", "persona"): _ALL_ACTIONS,
        ("customers", "importjob"): ("view", "add"),
        ("segments", "segmentmember"): _ALL_ACTIONS,
        ("segments", "segment"): _ALL_ACTIONS,
        ("campaigns", "campaign"): _ALL_ACTIONS,
        ("campaigns", "step"): _ALL_ACTIONS,
        ("campaigns", "template"): _ALL_ACTIONS,
        ("campaigns", "templatevariant"): _ALL_ACTIONS,
        # Retrying failed deliveries by hand (the Failed deliveries page).
        ("channels", "message"): ("view", "change"),
    },
    ANALYST: {(app, "*"): ("view",) for app in _APPS},
}


def roles_ensure(apps) -> None:
    """Create or update the role groups so they hold exactly their permissions."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        # Permissions are normally created after migrate; we need them now.
        # Migration state apps have no models_module, which create_permissions
        # requires; the live registry's must be left as it was.
        original = getattr(app_config, "models_module", None)
        app_config.models_module = original or True
        try:
            create_permissions(app_config, verbosity=0, apps=apps)
        finally:
            app_config.models_module = original

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, grants in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = []
        for (app_label, model), actions in grants.items():
            perms = Permission.objects.filter(content_type__app_label=app_label)
            if model != "*":
                perms = perms.filter(content_type__model=model)
            wanted += [p.pk for p in perms if p.codename.split("_", 1)[0] in actions]
        group.permissions.set(wanted)
