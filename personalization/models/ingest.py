"""Data collection: feeds, import jobs and their row errors, editors' mapping rules, revisions, embeddings,
social posts and customer messages (kept apart from readers' chats)."""

import re

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q


class FeedSource(models.Model):
    name = models.CharField(max_length=200)
    url = models.URLField(max_length=1000, unique=True)
    section = models.ForeignKey(
        "personalization.Section", on_delete=models.SET_NULL, null=True, blank=True, help_text="Default section."
    )
    is_active = models.BooleanField(default=True)
    poll_interval_minutes = models.PositiveIntegerField(default=30)
    publish = models.BooleanField(default=True, help_text="Publish new items at once, or keep them as drafts.")
    # Conditional requests: sent back as If-None-Match / If-Modified-Since.
    etag = models.CharField(max_length=500, blank=True)
    last_modified = models.CharField(max_length=100, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_error_at = models.DateTimeField(null=True, blank=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    next_poll_at = models.DateTimeField(null=True, blank=True, db_index=True)
    items_created = models.PositiveIntegerField(default=0)
    items_updated = models.PositiveIntegerField(default=0)
    items_skipped = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ImportJob(models.Model):
    class Format(models.TextChoices):
        JSONL = "jsonl", "JSON Lines"
        JSON = "json", "JSON array"
        CSV = "csv", "CSV"
        WXR = "wxr", "WordPress export (WXR)"
        FEED = "feed", "RSS / Atom feed"

    class Target(models.TextChoices):
        CONTENT = "content", "Catalog content"
        SOCIAL = "social", "Social posts"
        CUSTOMER = "customer", "Customer messages"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    format = models.CharField(max_length=16, choices=Format.choices)
    target = models.CharField(max_length=16, choices=Target.choices, default=Target.CONTENT)
    feed = models.ForeignKey(FeedSource, on_delete=models.SET_NULL, null=True, blank=True, related_name="jobs")
    file = models.FileField(upload_to="imports/%Y/%m/", blank=True)
    filename = models.CharField(max_length=300, blank=True, help_text="The file's name as given.")
    column_mapping = models.JSONField(
        default=dict, blank=True, help_text='Source column per field: {"title": "headline"}.'
    )
    options = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    progress = models.FloatField(default=0.0, help_text="0 to 1.")
    rows_seen = models.PositiveIntegerField(default=0)
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    skipped_count = models.PositiveIntegerField(default=0)
    failed_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why the whole job failed, if it did.")
    celery_task_id = models.CharField(max_length=255, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "-created_at"], name="importjob_status_idx")]

    def __str__(self) -> str:
        return f"Import {self.pk} ({self.get_format_display()}, {self.status})"


class ImportRowError(models.Model):
    job = models.ForeignKey(ImportJob, on_delete=models.CASCADE, related_name="row_errors")
    line = models.PositiveIntegerField(help_text="Line (JSON Lines, CSV) or item number (feeds, WXR).")
    external_id = models.CharField(max_length=300, blank=True)
    field = models.CharField(max_length=100, blank=True)
    message = models.TextField()
    raw = models.TextField(blank=True, help_text="The row as read, cut to 2,000 characters.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "line"]
        indexes = [models.Index(fields=["job", "line"], name="importrowerror_job_line_idx")]

    def __str__(self) -> str:
        return f"Line {self.line}: {self.message[:80]}"


class MappingRule(models.Model):
    """An editor's rule: when a field of an incoming item matches, set its section or add a tag."""

    class Field(models.TextChoices):
        ANY = "any", "Title, summary or body"
        TITLE = "title", "Title"
        BODY = "body", "Body"
        URL = "url", "URL"
        CATEGORY = "category", "Source category or tag"

    class MatchType(models.TextChoices):
        KEYWORD = "keyword", "Contains the word or phrase"
        REGEX = "regex", "Matches the regular expression"
        PREFIX = "prefix", "Starts with"

    name = models.CharField(max_length=200)
    field = models.CharField(max_length=16, choices=Field.choices, default=Field.ANY)
    match_type = models.CharField(max_length=16, choices=MatchType.choices, default=MatchType.KEYWORD)
    pattern = models.CharField(max_length=500)
    section = models.ForeignKey(
        "personalization.Section", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    tag = models.ForeignKey("personalization.Tag", on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    priority = models.IntegerField(default=100, help_text="Lower runs first; the first section rule that matches wins.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if not self.section_id and not self.tag_id:
            raise ValidationError("A rule sets a section, adds a tag, or both.")
        if self.match_type == self.MatchType.REGEX:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValidationError({"pattern": f"Not a valid regular expression: {exc}"}) from None


class ContentRevision(models.Model):
    """The text of an item before a correction replaced it."""

    content = models.ForeignKey("personalization.Content", on_delete=models.CASCADE, related_name="revisions")
    title = models.CharField(max_length=300)
    summary = models.TextField(blank=True)
    body = models.TextField(blank=True)
    content_hash = models.CharField(max_length=64, blank=True)
    job = models.ForeignKey(ImportJob, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["content", "-created_at"]
        indexes = [models.Index(fields=["content", "-created_at"], name="contentrevision_content_idx")]

    def __str__(self) -> str:
        return f"Revision of {self.content_id} at {self.created_at:%Y-%m-%d %H:%M}"


class ContentEmbedding(models.Model):
    content = models.OneToOneField(
        "personalization.Content", on_delete=models.CASCADE, primary_key=True, related_name="embedding"
    )
    model_name = models.CharField(max_length=200)
    dimensions = models.PositiveSmallIntegerField()
    vector = models.BinaryField(help_text="float32, little-endian, L2-normalised.")
    text_hash = models.CharField(max_length=64, help_text="content_hash of the text it was computed from.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at"]

    def __str__(self) -> str:
        return f"Embedding of {self.content_id} ({self.model_name})"


class ContentFingerprint(models.Model):
    """The MinHash signature of an item's clean text, computed once when it is written, so that
    near-duplicate search at import time never reads the catalog's text (personalization/ingest/dedup.py)."""

    content = models.OneToOneField(
        "personalization.Content", on_delete=models.CASCADE, primary_key=True, related_name="fingerprint"
    )
    num_perm = models.PositiveSmallIntegerField(help_text="Number of MinHash values; others are ignored.")
    signature = models.BinaryField(help_text="MinHash values over word 3-shingles: uint32, little-endian.")

    class Meta:
        ordering = ["-content"]

    def __str__(self) -> str:
        return f"Fingerprint of {self.content_id}"


class SocialPost(models.Model):
    """The social side of a Content of kind `post`: its platform, author handle and engagement."""

    content = models.OneToOneField(
        "personalization.Content", on_delete=models.CASCADE, primary_key=True, related_name="social"
    )
    platform = models.CharField(max_length=32, help_text="x, instagram, facebook, tiktok, mastodon…")
    handle = models.CharField(max_length=100)
    likes = models.PositiveIntegerField(default=0)
    shares = models.PositiveIntegerField(default=0)
    comments = models.PositiveIntegerField(default=0)
    views = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-content__published_at"]
        indexes = [models.Index(fields=["platform", "handle"], name="socialpost_platform_handle_idx")]

    def __str__(self) -> str:
        return f"@{self.handle} on {self.platform}"


class CustomerMessage(models.Model):
    """A support ticket, comment or e-mail from a customer: intent examples, and training text with consent."""

    class Channel(models.TextChoices):
        TICKET = "ticket", "Support ticket"
        COMMENT = "comment", "Comment"
        EMAIL = "email", "E-mail"

    channel = models.CharField(max_length=16, choices=Channel.choices)
    source = models.CharField(max_length=100, help_text="The system it came from, e.g. zendesk.")
    external_id = models.CharField(max_length=300, blank=True)
    subject = models.CharField(max_length=500, blank=True)
    text = models.TextField()
    received_at = models.DateTimeField()
    labels = models.JSONField(default=list, blank=True)
    training_consent = models.BooleanField(default=False)
    language = models.CharField(max_length=16, blank=True)
    content_hash = models.CharField(max_length=64, db_index=True)
    job = models.ForeignKey(ImportJob, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["channel", "-received_at"], name="customermessage_channel_idx")]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "external_id"], condition=~Q(external_id=""), name="customermessage_source_ext_id"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()} {self.external_id or self.pk}"
