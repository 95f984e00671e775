"""Reader-facing pages: the chat page and sign-in (which merges the anonymous history)."""

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from personalization.identity import SESSION_READER_KEY, reader_from
from personalization.services import reader_merge_anonymous


@ensure_csrf_cookie
def chat_page(request: HttpRequest) -> HttpResponse:
    # Creating the reader key here gives the websocket a session to key anonymous conversations by.
    reader_from(request.user, request.session)
    return render(request, "chat.html")


class LoginView(auth_views.LoginView):
    template_name = "registration/login.html"

    def form_valid(self, form):
        reader_key = self.request.session.get(SESSION_READER_KEY, "")
        response = super().form_valid(form)
        reader_merge_anonymous(user_id=form.get_user().pk, reader_key=reader_key)
        return response


def health(request: HttpRequest) -> JsonResponse:
    """Liveness and readiness: the database answers, and the channel layer's Redis when configured."""
    checks = {"database": "ok"}
    status = 200
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        checks["database"] = f"error: {exc.__class__.__name__}"
        status = 503
    if settings.REDIS_URL:
        try:
            cache.set("mediachat:health", "1", timeout=5)
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {exc.__class__.__name__}"
            status = 503
    return JsonResponse({"status": "ok" if status == 200 else "degraded", "checks": checks}, status=status)
