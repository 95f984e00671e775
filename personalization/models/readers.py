"""Readers: a profile beside Django's user; anonymous readers are keyed by a session reader key."""

from django.conf import settings
from django.db import models


class ReaderProfile(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="reader_profile")
    preferences = models.JSONField(
        default=dict, blank=True, help_text='Stated preferences, e.g. {"sections": ["science"], "kinds": ["podcast"]}.'
    )
    training_consent = models.BooleanField(
        default=False, help_text="The reader agreed that their conversations may be used to train models."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_seen_at"]

    def __str__(self) -> str:
        return f"Profile of {self.user}"
