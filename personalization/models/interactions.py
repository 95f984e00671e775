"""Implicit and explicit reading signals: impressions, clicks, views, dwell, completions, shares, ratings."""

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Interaction(models.Model):
    class Kind(models.TextChoices):
        IMPRESSION = "impression", "Impression"
        CLICK = "click", "Click"
        VIEW = "view", "View"
        DWELL = "dwell", "Dwell (seconds)"
        COMPLETE = "complete", "Complete"
        SHARE = "share", "Share"
        RATE = "rate", "Rate"

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="interactions"
    )
    session_key = models.CharField(max_length=64, blank=True, help_text="Anonymous reader key.")
    content = models.ForeignKey("personalization.Content", on_delete=models.CASCADE, related_name="interactions")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    value = models.FloatField(null=True, blank=True, help_text="Seconds for dwell, stars for rate.")
    source = models.CharField(max_length=32, default="web", help_text="Where it happened: web, chat, app, import.")
    idempotency_key = models.CharField(max_length=100, null=True, blank=True, unique=True)
    occurred_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [
            models.Index(fields=["user", "-occurred_at"], name="interaction_user_idx"),
            models.Index(fields=["session_key", "-occurred_at"], name="interaction_session_idx"),
            models.Index(fields=["content", "kind"], name="interaction_content_kind_idx"),
            models.Index(fields=["-occurred_at"], name="interaction_time_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(user__isnull=False) | ~Q(session_key=""), name="interaction_has_reader"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} on {self.content_id}"
