"""REST entry points for the published catalog and for reading signals (the interactions beacon)."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, generics
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import AnonRateThrottle, ScopedRateThrottle, UserRateThrottle

from mediachat.apis import ERRORS_404, ApiBase, BoundedJSONParser, ReaderSessionAuthentication
from mediachat.serializers import ErrorSerializer

from .selectors import ContentFilters, content_get, content_list, content_search, reader_interactions
from .serializers import (
    ContentDetailSerializer,
    ContentFilterSerializer,
    ContentSerializer,
    InteractionBatchErrorSerializer,
    InteractionBatchResultSerializer,
    InteractionBatchSerializer,
    InteractionSerializer,
)
from .services import SignalError, interactions_record


class ContentPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 100


class TextJSONParser(BoundedJSONParser):
    """JSON sent as text/plain: what navigator.sendBeacon posts for a string, without a CORS preflight."""

    media_type = "text/plain"


class BeaconSessionAuthentication(ReaderSessionAuthentication):
    """The beacon skips CSRF: sendBeacon cannot send the token, and a signal only ever counts for the caller
    (the session cookie is SameSite=Lax, so other sites' beacons arrive without it)."""

    def enforce_csrf(self, request: Request) -> None:
        return None


class ContentListView(ApiBase, generics.ListAPIView):
    serializer_class = ContentSerializer
    pagination_class = ContentPagination

    @extend_schema(
        summary="Published content",
        description="Newest first; with `q`, most relevant first. Filters combine (AND).",
        parameters=[ContentFilterSerializer],
        responses={200: ContentSerializer(many=True), 400: ErrorSerializer},
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        params = ContentFilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        data = dict(params.validated_data)
        query = data.pop("q", "").strip()
        filters = ContentFilters(**data)
        items = content_search(query=query, filters=filters) if query else content_list(filters=filters)
        page = self.paginate_queryset(items)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class ContentDetailView(ApiBase, generics.RetrieveAPIView):
    serializer_class = ContentDetailSerializer

    def get_object(self):
        content = content_get(slug=self.kwargs["slug"])
        if content is None:
            raise exceptions.NotFound(f"No published content '{self.kwargs['slug']}'.")
        return content

    @extend_schema(summary="One published item, with its body", responses={200: ContentDetailSerializer, **ERRORS_404})
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)


class InteractionsView(ApiBase, generics.ListAPIView):
    serializer_class = InteractionSerializer
    authentication_classes = [BeaconSessionAuthentication]
    parser_classes = [BoundedJSONParser, TextJSONParser]
    throttle_classes = [AnonRateThrottle, UserRateThrottle, ScopedRateThrottle]
    throttle_scope = "interactions"

    def get_queryset(self):
        return reader_interactions(reader=self.reader())

    @extend_schema(summary="The reader's own reading signals", description="Newest first.")
    def get(self, request: Request, *args, **kwargs) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(
        summary="Record reading signals (beacon)",
        description=(
            "A batch of up to 100 events for the calling reader, all or nothing. Accepts application/json and "
            "text/plain holding JSON (navigator.sendBeacon). Needs a reader session; no CSRF token."
        ),
        request={"application/json": InteractionBatchSerializer, "text/plain": InteractionBatchSerializer},
        responses={
            200: InteractionBatchResultSerializer,
            400: OpenApiResponse(InteractionBatchErrorSerializer, description="Invalid batch; nothing recorded."),
            403: OpenApiResponse(ErrorSerializer, description="No reader session."),
            413: ErrorSerializer,
        },
    )
    def post(self, request: Request) -> Response:
        data = request.data
        if not isinstance(data, dict) or "events" not in data:
            raise SignalError("invalid_field", 'The body must be a JSON object: {"events": [...]}.')
        result = interactions_record(reader=self.reader(), events=data["events"])
        return Response({"recorded": result.recorded, "duplicates": result.duplicates})
