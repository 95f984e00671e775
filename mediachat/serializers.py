"""REST shapes of conversations, messages, feedback, the reader and errors."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from personalization.serializers import ContentRefSerializer
from personalization.services import MAX_DB_INT

from .models import Conversation, Message, MessageFeedback
from .services import FEEDBACK_REASONS, MAX_COMMENT_CHARS

MAX_MESSAGES_PER_PAGE = 200


class ErrorSerializer(serializers.Serializer):
    """Every 4xx answer of the API."""

    code = serializers.CharField(help_text="Stable, for programs: not_found, invalid_field, rate_limited, ...")
    detail = serializers.CharField(help_text="For people.")
    errors = serializers.JSONField(required=False, help_text="Per-field messages, when a field was invalid.")


class ReaderSerializer(serializers.Serializer):
    authenticated = serializers.BooleanField()
    username = serializers.CharField(allow_null=True)
    csrf_token = serializers.CharField(help_text="Send it back as the X-CSRFToken header on POST requests.")


class ConversationSerializer(serializers.ModelSerializer):
    message_count = serializers.IntegerField(read_only=True)

    class Meta:
        model = Conversation
        fields = ["id", "title", "started_at", "updated_at", "message_count"]


class FeedbackSerializer(serializers.ModelSerializer):
    message = serializers.IntegerField(source="message_id", read_only=True)
    rating = serializers.ChoiceField(choices=MessageFeedback.Rating.choices)
    reasons = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = MessageFeedback
        fields = ["message", "rating", "reasons", "comment", "created_at", "updated_at"]


class MessageSerializer(serializers.ModelSerializer):
    conversation = serializers.IntegerField(source="conversation_id", read_only=True)
    reply_to = serializers.IntegerField(source="reply_to_id", read_only=True, allow_null=True)
    cited = ContentRefSerializer(
        many=True, read_only=True, source="published_cited", help_text="Cited items still published."
    )
    feedback = serializers.SerializerMethodField()

    class Meta:
        model = Message
        fields = ["id", "conversation", "role", "text", "status", "reply_to", "created_at", "cited", "feedback"]

    @extend_schema_field(FeedbackSerializer(allow_null=True))
    def get_feedback(self, obj: Message) -> dict | None:
        try:
            feedback = obj.feedback
        except MessageFeedback.DoesNotExist:
            return None
        return FeedbackSerializer(feedback, context=self.context).data


class MessagePageSerializer(serializers.Serializer):
    conversation = serializers.IntegerField()
    results = MessageSerializer(many=True)
    has_more = serializers.BooleanField(help_text="More messages follow: ask again with after_id=next_after_id.")
    next_after_id = serializers.IntegerField(allow_null=True, help_text="The last id returned, or null if none.")


class MessageQuerySerializer(serializers.Serializer):
    after_id = serializers.IntegerField(
        required=False, default=0, min_value=0, max_value=MAX_DB_INT, help_text="Only messages with a larger id."
    )
    limit = serializers.IntegerField(required=False, default=100, min_value=1, max_value=MAX_MESSAGES_PER_PAGE)


class FeedbackInputSerializer(serializers.Serializer):
    """The feedback request body (validated by mediachat.services.feedback_set)."""

    rating = serializers.ChoiceField(choices=MessageFeedback.Rating.choices, help_text="1 helpful, -1 not.")
    reasons = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(FEEDBACK_REASONS)), required=False, default=list
    )
    comment = serializers.CharField(required=False, allow_blank=True, max_length=MAX_COMMENT_CHARS)
