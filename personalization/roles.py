"""The admin roles, Editors and Staff, as data, and the one function that applies them.

The data migration and ``manage.py sync_roles`` both call :func:`roles_sync`, so a deployment that adds
models later (intents, keyword rules, surveys) picks up their permissions by running the command again.
"""

import fnmatch
from dataclasses import dataclass

from django.apps import apps as global_apps
from django.apps.registry import Apps
from django.contrib.auth.management import create_permissions
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, transaction
from django.db.models import Model

EDITORS = "Editors"
STAFF = "Staff"

CRUD = ("add", "change", "delete", "view")


@dataclass(frozen=True)
class Grant:
    """Permissions on every model of `app_label` whose lower-case name matches one of `models` (fnmatch)."""

    app_label: str
    models: tuple[str, ...]
    actions: tuple[str, ...] = ()
    # Custom permissions from Meta.permissions, by codename.
    extra: tuple[str, ...] = ()


EDITOR_GRANTS = (
    Grant("personalization", ("content", "section", "tag", "author"), CRUD),
    Grant("personalization", ("interaction", "readerprofile"), ("view",)),
    # Intents, keyword rules and surveys arrive in later migrations; the patterns take them in as they do.
    Grant("personalization", ("intent*", "keywordrule", "survey*"), CRUD),
    # Entity synonyms are the editors'; the gazetteer is rebuilt from the catalog and only read.
    Grant("personalization", ("entitysynonym",), CRUD),
    Grant("personalization", ("gazetteerentry",), ("view",)),
    # Data collection: editors run imports and keep feeds, rules and social posts; the pipeline writes the rest.
    Grant("personalization", ("feedsource", "mappingrule", "socialpost"), CRUD),
    # An import job is the record of what ran: started (add) and read, never edited; "Run again" makes a new one.
    Grant("personalization", ("importjob",), ("add", "view")),
    Grant("personalization", ("importrowerror", "contentrevision", "contentembedding"), ("view",)),
    # Customer messages come only from imports; editors correct their labels and consent.
    Grant("personalization", ("customermessage",), ("change", "view")),
    Grant("mediachat", ("conversation", "message", "messagefeedback"), ("view",)),
)

STAFF_GRANTS = (
    *EDITOR_GRANTS,
    Grant("training", ("modelversion",), ("add", "change", "view"), ("activate_modelversion",)),
    Grant("training", ("trainingrun",), ("add", "change", "view"), ("cancel_trainingrun",)),
    # How the assistant decodes is tuned with the models it serves.
    Grant("mediachat", ("decodingprofile",), CRUD),
)

ROLES: dict[str, tuple[Grant, ...]] = {EDITORS: EDITOR_GRANTS, STAFF: STAFF_GRANTS}


def _codenames(grant: Grant, models: list[type[Model]]) -> set[tuple[str, str]]:
    """(model, codename) pairs the grant gives, for the models of its app that exist in this state."""
    pairs = set()
    for model in models:
        opts = model._meta
        if not any(fnmatch.fnmatchcase(opts.model_name, pattern) for pattern in grant.models):
            continue
        pairs |= {(opts.model_name, f"{action}_{opts.model_name}") for action in grant.actions}
        # Only custom permissions the model declares in this state: an older migration state may lack them.
        declared = {codename for codename, _ in opts.permissions}
        pairs |= {(opts.model_name, codename) for codename in grant.extra if codename in declared}
    return pairs


def roles_sync(*, apps: Apps = global_apps, using: str = DEFAULT_DB_ALIAS) -> dict[str, int]:
    """Create or repair the role groups so each holds exactly its permissions; returns permissions per group.

    `apps` is the migration state when a migration calls it, the live registry otherwise. Django creates
    permissions after ``migrate`` (post_migrate), too late for a migration, so this creates any missing
    ones first. Raises ImproperlyConfigured if a granted permission still does not exist.
    """
    group_model = apps.get_model("auth", "Group")
    permission_model = apps.get_model("auth", "Permission")
    counts: dict[str, int] = {}
    with transaction.atomic(using=using):
        for app_config in global_apps.get_app_configs():
            create_permissions(app_config, apps=apps, using=using, verbosity=0)
        for role, grants in ROLES.items():
            wanted: set[tuple[str, str, str]] = set()
            for grant in grants:
                try:
                    app_config = apps.get_app_config(grant.app_label)
                except LookupError:
                    continue
                pairs = _codenames(grant, list(app_config.get_models()))
                wanted |= {(grant.app_label, model, codename) for model, codename in pairs}
            app_labels = {app for app, _, _ in wanted}
            candidates = (
                permission_model.objects.using(using)
                .filter(content_type__app_label__in=app_labels)
                .values_list("pk", "content_type__app_label", "content_type__model", "codename")
            )
            found = {(app, model, codename): pk for pk, app, model, codename in candidates}
            missing = wanted - found.keys()
            if missing:
                raise ImproperlyConfigured(f"Role {role!r} grants permissions that do not exist: {sorted(missing)}")
            ids = [found[key] for key in wanted]
            group, _ = group_model.objects.using(using).get_or_create(name=role)
            group.permissions.set(ids)
            counts[role] = len(ids)
    return counts
