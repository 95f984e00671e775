"""Routes of the REST API, mounted at /api/ (the health check at /api/health/ lives in mediachat.urls)."""

from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from personalization.apis import ContentDetailView, ContentListView, InteractionsView

from .apis import ConversationDetailView, ConversationListView, FeedbackView, MessageListView, ReaderView

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
    path("reader/", ReaderView.as_view(), name="api-reader"),
    path("content/", ContentListView.as_view(), name="api-content-list"),
    path("content/<slug:slug>/", ContentDetailView.as_view(), name="api-content-detail"),
    path("conversations/", ConversationListView.as_view(), name="api-conversation-list"),
    path("conversations/<int:pk>/", ConversationDetailView.as_view(), name="api-conversation-detail"),
    path("conversations/<int:pk>/messages/", MessageListView.as_view(), name="api-message-list"),
    path("messages/<int:pk>/feedback/", FeedbackView.as_view(), name="api-message-feedback"),
    path("interactions/", InteractionsView.as_view(), name="api-interactions"),
]
