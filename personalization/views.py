"""Reader-facing catalog pages."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from .models import Content


def content_page(request: HttpRequest, slug: str) -> HttpResponse:
    content = get_object_or_404(
        Content.objects.published().select_related("section").prefetch_related("tags", "authors"), slug=slug
    )
    return render(request, "personalization/content.html", {"content": content})
