"""REST entry points for a reader's own conversations, messages and feedback, and the API's shared parts.

Every view here parses, identifies the reader (personalization.identity.reader_from), calls one selector
or service and serializes. Errors always have the shape {"code", "detail"} (plus "errors" for fields);
another reader's conversation or message answers 404 exactly as a missing one does.
"""

import io

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.views.defaults import page_not_found
from drf_spectacular.drainage import set_override
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, generics
from rest_framework.authentication import SessionAuthentication
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, UserRateThrottle
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from personalization.identity import SESSION_READER_KEY, ReaderRef, reader_from
from personalization.selectors import reader_conversation, reader_conversations, reader_messages
from personalization.services import SignalError

from .serializers import (
    ConversationSerializer,
    ErrorSerializer,
    FeedbackInputSerializer,
    FeedbackSerializer,
    MessagePageSerializer,
    MessageQuerySerializer,
    MessageSerializer,
    ReaderSerializer,
)
from .services import ChatError, feedback_set

MAX_BODY_BYTES = 256 * 1024

# DRF's codes renamed where the websocket protocol already has a name for the same refusal.
CODE_NAMES = {"parse_error": "invalid_json", "throttled": "rate_limited", "invalid": "invalid_field"}


def _first_message(detail: object, path: str = "") -> str:
    """The first message in a (nested) ValidationError detail, prefixed with where it was found."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            return _first_message(value, f"{path}.{key}" if path else str(key))
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if value:
                inner = f"{path}[{index}]" if isinstance(value, dict | list) and len(detail) > 1 else path
                return _first_message(value, inner)
    text = str(detail)
    return f"{path}: {text}" if path and path != "non_field_errors" else text


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, with every refusal reshaped as {"code", "detail"} (and "errors" for invalid fields)."""
    if isinstance(exc, ChatError):
        status = 404 if exc.code == "not_found" else 400
        return Response({"code": exc.code, "detail": exc.detail}, status=status)
    if isinstance(exc, SignalError):
        body: dict = {"code": exc.code, "detail": exc.detail}
        if exc.errors:
            body["errors"] = [{"index": index, "fields": fields} for index, fields in exc.errors.items()]
        return Response(body, status=403 if exc.code == "no_reader" else 400)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None or not isinstance(exc, exceptions.APIException):
        return response
    if isinstance(exc, exceptions.ValidationError):
        body = {"code": "invalid_field", "detail": _first_message(exc.detail) or "Invalid input."}
        body["errors"] = exc.detail
    else:
        code = exc.get_codes()
        code = code if isinstance(code, str) else exc.default_code
        body = {"code": CODE_NAMES.get(code, code), "detail": str(exc.detail)}
    response.data = body
    return response


def api_page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """The 404 handler: JSON under /api/ (no route matched), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return JsonResponse({"code": "not_found", "detail": "No such endpoint."}, status=404)
    return page_not_found(request, exception)


class PayloadTooLarge(exceptions.APIException):
    status_code = 413
    default_detail = f"The body is over {MAX_BODY_BYTES} bytes."
    default_code = "too_large"


class BoundedJSONParser(JSONParser):
    """JSON, refused past MAX_BODY_BYTES before it is decoded (DRF reads the stream past Django's own limit)."""

    def parse(self, stream, media_type=None, parser_context=None):
        raw = stream.read(MAX_BODY_BYTES + 1)
        if len(raw) > MAX_BODY_BYTES:
            raise PayloadTooLarge()
        try:
            return super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None


class ReaderSessionAuthentication(SessionAuthentication):
    """Session authentication that checks CSRF for anonymous readers too: their session is who they are."""

    def authenticate(self, request: Request):
        result = super().authenticate(request)
        session = getattr(request._request, "session", None)
        if result is None and session is not None and session.get(SESSION_READER_KEY):
            self.enforce_csrf(request)
        return result


# The subclasses all describe the same session cookie: one "cookieAuth" component, without a collision warning.
set_override(ReaderSessionAuthentication, "suppress_collision_warning", True)


class ReaderSessionScheme(OpenApiAuthenticationExtension):
    target_class = ReaderSessionAuthentication
    match_subclasses = True
    name = "cookieAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "apiKey", "in": "cookie", "name": settings.SESSION_COOKIE_NAME}


# What every view of this API shares: session readers, throttles and the error shape. (A comment, not a
# docstring: the schema would show an inherited docstring as every operation's description.)
class ApiBase:
    authentication_classes = [ReaderSessionAuthentication]
    throttle_classes = [AnonRateThrottle, UserRateThrottle]

    def get_exception_handler(self):
        return api_exception_handler

    def reader(self, *, create: bool = False) -> ReaderRef:
        return reader_from(self.request.user, self.request.session, create=create)


ERRORS_404 = {404: OpenApiResponse(ErrorSerializer, description="Not found, or not this reader's.")}


class ReaderView(ApiBase, APIView):
    @extend_schema(
        responses=ReaderSerializer,
        summary="Who is reading",
        description="Starts the anonymous reader session (and sets the CSRF cookie) if there is none yet.",
    )
    def get(self, request: Request) -> Response:
        reader = self.reader(create=True)
        user = request.user if reader.is_authenticated else None
        return Response(
            ReaderSerializer(
                {
                    "authenticated": reader.is_authenticated,
                    "username": user.get_username() if user else None,
                    "csrf_token": get_token(request),
                }
            ).data
        )


class ConversationListView(ApiBase, generics.ListAPIView):
    serializer_class = ConversationSerializer

    def get_queryset(self):
        return reader_conversations(reader=self.reader())

    @extend_schema(summary="The reader's conversations", description="Most recently active first.")
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class ConversationDetailView(ApiBase, generics.RetrieveAPIView):
    serializer_class = ConversationSerializer

    def get_object(self):
        conversation = reader_conversation(reader=self.reader(), conversation_id=self.kwargs["pk"])
        if conversation is None:
            raise exceptions.NotFound(f"No conversation {self.kwargs['pk']} for this reader.")
        return conversation

    @extend_schema(summary="One of the reader's conversations", responses={200: ConversationSerializer, **ERRORS_404})
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class MessageListView(ApiBase, APIView):
    @extend_schema(
        summary="Messages of one of the reader's conversations",
        description="Oldest first; pass the last id you have as after_id to get only newer ones.",
        parameters=[MessageQuerySerializer],
        responses={200: MessagePageSerializer, 400: ErrorSerializer, **ERRORS_404},
    )
    def get(self, request: Request, pk: int) -> Response:
        query = MessageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        limit = query.validated_data["limit"]
        messages = reader_messages(
            reader=self.reader(), conversation_id=pk, after_id=query.validated_data["after_id"], limit=limit + 1
        )
        if messages is None:
            raise exceptions.NotFound(f"No conversation {pk} for this reader.")
        page = messages[:limit]
        return Response(
            {
                "conversation": pk,
                "results": MessageSerializer(page, many=True, context={"request": request}).data,
                "has_more": len(messages) > limit,
                "next_after_id": page[-1].pk if page else None,
            }
        )


class FeedbackView(ApiBase, APIView):
    parser_classes = [BoundedJSONParser]

    @extend_schema(
        summary="Rate an assistant message",
        description="A second rating replaces the first. Anonymous readers send the CSRF token too.",
        request=FeedbackInputSerializer,
        responses={
            200: FeedbackSerializer,
            400: ErrorSerializer,
            403: ErrorSerializer,
            413: ErrorSerializer,
            **ERRORS_404,
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        data = request.data
        if not isinstance(data, dict):
            raise ChatError("invalid_json", "The body must be a JSON object.")
        if "rating" not in data:
            raise ChatError("missing_field", "'rating' is required.")
        feedback = feedback_set(
            reader=self.reader(),
            message_id=pk,
            rating=data["rating"],
            reasons=data.get("reasons"),
            comment=data.get("comment", ""),
        )
        return Response(FeedbackSerializer(feedback).data)
