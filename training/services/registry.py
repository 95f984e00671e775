"""The model registry's writes: which version of each kind of model serves."""

import logging

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from training.models import ModelKind, ModelVersion

logger = logging.getLogger(__name__)


def model_version_activate(*, version_id: int, user_id: int | None) -> ModelVersion:
    """Make `version_id` the active version of its kind; the one active before it becomes retired.

    Candidates and retired versions (a rollback) can be activated; activating the active version changes
    nothing. Raises ValidationError (code "not_found") for an unknown version.
    """
    with transaction.atomic():
        version = ModelVersion.objects.select_for_update().filter(pk=version_id).first()
        if version is None:
            raise ValidationError(f"No model version {version_id}.", code="not_found")
        if version.status == ModelVersion.Status.ACTIVE:
            return version
        # Lock every version of the kind so two activations of one kind queue instead of colliding on
        # the one-active-per-kind constraint.
        list(ModelVersion.objects.select_for_update().filter(kind=version.kind).values_list("pk", flat=True))
        now = timezone.now()
        ModelVersion.objects.filter(kind=version.kind, status=ModelVersion.Status.ACTIVE).update(
            status=ModelVersion.Status.RETIRED
        )
        version.status = ModelVersion.Status.ACTIVE
        version.activated_at = now
        version.save(update_fields=["status", "activated_at"])
        if version.kind == ModelKind.INTENT:
            # Stored predictions carry the version that made them: history is classified again with this one.
            from personalization.understanding.tasks import messages_reclassify

            transaction.on_commit(lambda: messages_reclassify.delay(version.pk))
    logger.info("model version %s (%s) activated by user %s", version.pk, version.kind, user_id)
    return version
