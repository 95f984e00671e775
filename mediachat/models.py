"""Conversations between a reader and the assistant, their messages and the readers' feedback."""

from django.conf import settings
from django.db import models
from django.db.models import Q


class Conversation(models.Model):
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, null=True, blank=True, related_name="conversations"
    )
    session_key = models.CharField(max_length=64, blank=True, help_text="Anonymous reader key.")
    title = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]
        indexes = [
            models.Index(fields=["user", "-updated_at"], name="conversation_user_idx"),
            models.Index(fields=["session_key", "-updated_at"], name="conversation_session_idx"),
            models.Index(fields=["-started_at"], name="conversation_started_idx"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(user__isnull=False) | ~Q(session_key=""), name="conversation_has_reader"
            ),
        ]

    def __str__(self) -> str:
        return self.title or f"Conversation {self.pk}"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "Reader"
        ASSISTANT = "assistant", "Assistant"
        SYSTEM = "system", "System"

    class Status(models.TextChoices):
        STREAMING = "streaming", "Streaming"
        COMPLETE = "complete", "Complete"
        INTERRUPTED = "interrupted", "Interrupted"
        FAILED = "failed", "Failed"

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    role = models.CharField(max_length=16, choices=Role.choices)
    text = models.TextField(blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.COMPLETE)
    client_id = models.CharField(max_length=64, blank=True, help_text="The client's id, for idempotent resends.")
    reply_to = models.ForeignKey("self", on_delete=models.SET_NULL, null=True, blank=True, related_name="replies")
    intent = models.CharField(max_length=100, blank=True)
    confidence = models.FloatField(null=True, blank=True)
    entities = models.JSONField(
        default=list, blank=True, help_text="Entities with character spans: kind, value, text, start, end."
    )
    intent_source = models.CharField(
        max_length=16, blank=True, help_text="What decided the intent: rule, model, or empty when not classified."
    )
    intent_model_version = models.ForeignKey(
        "training.ModelVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="classified_messages"
    )
    cited = models.ManyToManyField("personalization.Content", blank=True, related_name="cited_in")
    model_version = models.ForeignKey(
        "training.ModelVersion", on_delete=models.SET_NULL, null=True, blank=True, related_name="messages"
    )
    engine = models.CharField(max_length=100, blank=True, help_text="The engine that wrote the reply.")
    decoding = models.JSONField(default=dict, blank=True, help_text="Decoding parameters used.")
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Total time to the last token.")
    first_token_ms = models.PositiveIntegerField(null=True, blank=True, help_text="Time to the first token.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["conversation", "id"], name="message_conversation_idx"),
            models.Index(fields=["-created_at"], name="message_created_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "client_id"], condition=~Q(client_id=""), name="message_client_id_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.text[:60]}"


class MessageFeedback(models.Model):
    class Rating(models.IntegerChoices):
        UP = 1, "Helpful"
        DOWN = -1, "Not helpful"

    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="feedback")
    rating = models.SmallIntegerField(choices=Rating.choices)
    reasons = models.JSONField(default=list, blank=True, help_text="Reason tags, e.g. off_topic, wrong, too_long.")
    comment = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name_plural = "message feedback"

    def __str__(self) -> str:
        return f"{self.get_rating_display()} on message {self.message_id}"


class DecodingProfile(models.Model):
    """A named set of decoding parameters editors keep; the default one applies to every reply."""

    class Strategy(models.TextChoices):
        GREEDY = "greedy", "Greedy"
        SAMPLE = "sample", "Sampling (temperature, top-k, top-p)"
        BEAM = "beam", "Beam search"

    name = models.SlugField(max_length=50, unique=True, help_text="What a request names in decoding.profile.")
    description = models.CharField(max_length=200, blank=True)
    is_default = models.BooleanField(default=False, help_text="Applies to every reply that names no profile.")
    strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.GREEDY)
    max_new_tokens = models.PositiveIntegerField(default=96)
    temperature = models.FloatField(default=0.8)
    top_k = models.PositiveIntegerField(default=40)
    top_p = models.FloatField(default=0.95)
    repetition_penalty = models.FloatField(default=1.1)
    num_beams = models.PositiveSmallIntegerField(default=4)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True), name="one_default_profile"),
        ]

    def __str__(self) -> str:
        return self.name

    def validate_constraints(self, exclude=None) -> None:
        # Making a profile the default takes the flag from the previous one (the admin does both in one
        # transaction); the database constraint still guards against two defaults.
        super().validate_constraints(exclude={*(exclude or ()), "is_default"})

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from .engine.decoding import DecodingError, DecodingParams, decoding_resolve

        try:
            decoding_resolve(DecodingParams(), self.parameters())
        except DecodingError as exc:
            field = exc.field if exc.field in {f.name for f in self._meta.fields} else None
            raise ValidationError({field: exc.detail} if field else exc.detail) from None

    def parameters(self) -> dict:
        """The profile as a `decoding` override."""
        return {
            "strategy": self.strategy,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_k": self.top_k,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "num_beams": self.num_beams,
        }
