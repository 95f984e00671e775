"""REST shapes of the catalog and of reading signals (output, query parameters, documented request bodies)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import Author, Content, Interaction, Section, Tag
from .services import MAX_EVENTS_PER_BATCH, MAX_IDEMPOTENCY_KEY_CHARS


class SectionSerializer(serializers.ModelSerializer):
    class Meta:
        model = Section
        fields = ["slug", "name"]


class TagSerializer(serializers.ModelSerializer):
    class Meta:
        model = Tag
        fields = ["slug", "name"]


class AuthorSerializer(serializers.ModelSerializer):
    class Meta:
        model = Author
        fields = ["slug", "name"]


class ContentRefSerializer(serializers.ModelSerializer):
    """A short reference to an item: enough to show a link."""

    url = serializers.SerializerMethodField(help_text="Where a reader opens it (absolute).")

    class Meta:
        model = Content
        fields = ["id", "slug", "kind", "title", "url"]

    @extend_schema_field(OpenApiTypes.URI)
    def get_url(self, obj: Content) -> str:
        request = self.context.get("request")
        return request.build_absolute_uri(obj.reader_url) if request is not None else obj.reader_url


class ContentSerializer(ContentRefSerializer):
    """A published item as listed: everything but the body."""

    section = SectionSerializer(read_only=True, allow_null=True)
    tags = TagSerializer(many=True, read_only=True)
    authors = AuthorSerializer(many=True, read_only=True)

    class Meta(ContentRefSerializer.Meta):
        fields = [
            *ContentRefSerializer.Meta.fields,
            "summary",
            "language",
            "section",
            "tags",
            "authors",
            "published_at",
            "updated_at",
            "duration_seconds",
        ]


class ContentDetailSerializer(ContentSerializer):
    """A published item with its body."""

    class Meta(ContentSerializer.Meta):
        fields = [*ContentSerializer.Meta.fields, "body"]


class ContentFilterSerializer(serializers.Serializer):
    """Query parameters of the catalog list; all optional."""

    q = serializers.CharField(
        required=False, allow_blank=True, max_length=200, help_text="Search words; results ranked by relevance."
    )
    section = serializers.SlugField(required=False, max_length=120, help_text="Section slug.")
    tag = serializers.SlugField(required=False, max_length=120, help_text="Tag slug.")
    author = serializers.SlugField(required=False, max_length=170, help_text="Author slug.")
    kind = serializers.ChoiceField(choices=Content.Kind.choices, required=False)
    language = serializers.CharField(required=False, max_length=16, help_text="Language code, e.g. en.")
    published_after = serializers.DateField(required=False, help_text="ISO date; published on or after that day.")
    published_before = serializers.DateField(required=False, help_text="ISO date; published on or before that day.")

    def validate(self, attrs: dict) -> dict:
        after, before = attrs.get("published_after"), attrs.get("published_before")
        if after and before and after > before:
            raise serializers.ValidationError({"published_before": "Must not be earlier than published_after."})
        return attrs


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}], "description": "Content id or slug."})
class ContentIdOrSlugField(serializers.JSONField):
    pass


class InteractionEventSerializer(serializers.Serializer):
    """One reading signal, as a client sends it (validated by personalization.services.interactions_record)."""

    content = ContentIdOrSlugField()
    kind = serializers.ChoiceField(choices=Interaction.Kind.choices)
    value = serializers.FloatField(
        required=False, allow_null=True, help_text="Dwell: seconds (0 to 86400, required). Rate: 1 to 5 (required)."
    )
    source = serializers.RegexField(r"^[a-z0-9_-]{1,32}$", required=False, default="web")
    idempotency_key = serializers.CharField(
        required=False, max_length=MAX_IDEMPOTENCY_KEY_CHARS, help_text="Sent twice, stored once (per reader)."
    )
    occurred_at = serializers.DateTimeField(
        required=False, help_text="ISO 8601; default now. At most 30 days old, not in the future."
    )


class InteractionBatchSerializer(serializers.Serializer):
    events = InteractionEventSerializer(many=True, min_length=1, max_length=MAX_EVENTS_PER_BATCH)


class InteractionBatchResultSerializer(serializers.Serializer):
    recorded = serializers.IntegerField(help_text="Events stored.")
    duplicates = serializers.IntegerField(help_text="Events skipped because their idempotency key was seen.")


class EventErrorsSerializer(serializers.Serializer):
    index = serializers.IntegerField(help_text="Position of the event in 'events'.")
    fields = serializers.DictField(child=serializers.CharField(), help_text="Field name to message.")


class InteractionBatchErrorSerializer(serializers.Serializer):
    code = serializers.CharField()
    detail = serializers.CharField()
    errors = EventErrorsSerializer(many=True, required=False)


class InteractionSerializer(serializers.ModelSerializer):
    content = ContentRefSerializer(read_only=True)

    class Meta:
        model = Interaction
        fields = ["id", "content", "kind", "value", "source", "occurred_at"]
