"""The catalog: articles, videos and podcasts with their sections, tags and authors."""

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.urls import reverse
from django.utils import timezone


class Section(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=120, unique=True)
    description = models.TextField(blank=True)
    position = models.PositiveSmallIntegerField(default=0, help_text="Order in navigation.")

    class Meta:
        ordering = ["position", "name"]

    def __str__(self) -> str:
        return self.name


class Tag(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=120, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Author(models.Model):
    name = models.CharField(max_length=150)
    slug = models.SlugField(max_length=170, unique=True)
    bio = models.TextField(blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ContentQuerySet(models.QuerySet):
    def published(self, now=None) -> "ContentQuerySet":
        """Visible to readers now: published, past its publication date and out of embargo."""
        now = now or timezone.now()
        return self.filter(status=Content.Status.PUBLISHED, published_at__lte=now).filter(
            Q(embargo_until__isnull=True) | Q(embargo_until__lte=now)
        )


class Content(models.Model):
    class Kind(models.TextChoices):
        ARTICLE = "article", "Article"
        VIDEO = "video", "Video"
        PODCAST = "podcast", "Podcast"
        POST = "post", "Social post"

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"
        ARCHIVED = "archived", "Archived"

    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.ARTICLE)
    title = models.CharField(max_length=300)
    slug = models.SlugField(max_length=320, unique=True)
    summary = models.TextField(blank=True)
    body = models.TextField(blank=True)
    url = models.URLField(max_length=500, blank=True, help_text="Canonical address, if it lives elsewhere.")
    language = models.CharField(max_length=16, default="en")
    section = models.ForeignKey(Section, on_delete=models.PROTECT, null=True, blank=True, related_name="contents")
    tags = models.ManyToManyField(Tag, blank=True, related_name="contents")
    authors = models.ManyToManyField(Author, blank=True, related_name="contents")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.DRAFT)
    published_at = models.DateTimeField(null=True, blank=True)
    embargo_until = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.PositiveIntegerField(null=True, blank=True, help_text="Videos and podcasts.")
    # Provenance and deduplication, filled by the importers (personalization/ingest/).
    source = models.CharField(max_length=100, blank=True, help_text="Where it came from: feed:<id>, file, wxr…")
    external_id = models.CharField(max_length=300, blank=True, help_text="Its id at the source.")
    canonical_url = models.CharField(max_length=500, blank=True, db_index=True)
    content_hash = models.CharField(max_length=64, blank=True, db_index=True, help_text="sha256 of the clean text.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ContentQuerySet.as_manager()

    class Meta:
        ordering = ["-published_at", "-id"]
        indexes = [
            models.Index(fields=["status", "-published_at"], name="content_status_pub_idx"),
            models.Index(fields=["section", "status", "-published_at"], name="content_section_pub_idx"),
            models.Index(fields=["-updated_at"], name="content_updated_idx"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["source", "external_id"], condition=~Q(external_id=""), name="content_source_external_id"
            ),
        ]

    def __str__(self) -> str:
        return self.title

    def get_absolute_url(self) -> str:
        return reverse("content-page", kwargs={"slug": self.slug})

    def clean(self) -> None:
        if self.status == self.Status.PUBLISHED and not self.published_at:
            raise ValidationError({"published_at": "Published content needs a publication date."})
        if self.embargo_until and self.published_at and self.embargo_until < self.published_at:
            raise ValidationError({"embargo_until": "The embargo cannot end before publication."})

    @property
    def reader_url(self) -> str:
        """Where a reader opens it: its canonical address, or the platform's own page."""
        return self.url or self.get_absolute_url()
