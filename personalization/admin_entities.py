"""Admin for entities: editors' synonyms (theirs to edit), the gazetteer (read only) and "Rebuild gazetteer"."""

import functools

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template import engines
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.http import require_POST

from .models import EntitySynonym, GazetteerEntry
from .understanding.entities import STOPWORDS, surface_normalise
from .understanding.tasks import gazetteer_rebuild

REBUILD_PERMISSION = "personalization.change_entitysynonym"

# Both change lists carry the button; it is small enough to live here rather than in two template files.
CHANGE_LIST_WITH_REBUILD = """{% extends "admin/change_list.html" %}
{% block object-tools-items %}
  {% if can_rebuild_gazetteer %}
    <li><form method="post" action="{% url 'admin:personalization_gazetteer_rebuild' %}" style="display:inline">
      {% csrf_token %}<button type="submit" id="rebuild-gazetteer" class="button">Rebuild gazetteer</button>
    </form></li>
  {% endif %}
  {{ block.super }}
{% endblock %}"""


@functools.cache
def _change_list_template():
    return engines["django"].from_string(CHANGE_LIST_WITH_REBUILD)


class RebuildButtonMixin:
    """Shows "Rebuild gazetteer" above the change list to those who may edit synonyms."""

    @property
    def change_list_template(self):
        return _change_list_template()

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "can_rebuild_gazetteer": request.user.has_perm(REBUILD_PERMISSION)}
        return super().changelist_view(request, extra_context)


class EntitySynonymForm(forms.ModelForm):
    class Meta:
        model = EntitySynonym
        fields = ["kind", "value", "synonym"]

    def clean_synonym(self) -> str:
        synonym = self.cleaned_data["synonym"].strip()
        surface = surface_normalise(synonym)
        if len(surface) < 2 or surface in STOPWORDS:
            raise ValidationError("Give a word or phrase of two characters or more that is not a common word.")
        return synonym


@admin.register(EntitySynonym)
class EntitySynonymAdmin(RebuildButtonMixin, admin.ModelAdmin):
    form = EntitySynonymForm
    list_display = ["synonym", "kind", "value", "created_at"]
    list_filter = ["kind"]
    search_fields = ["synonym", "value"]
    readonly_fields = ["created_at"]

    def get_urls(self):
        rebuild = self.admin_site.admin_view(self.rebuild_view)
        return [path("rebuild-gazetteer/", rebuild, name="personalization_gazetteer_rebuild"), *super().get_urls()]

    @method_decorator(require_POST)
    def rebuild_view(self, request: HttpRequest) -> HttpResponse:
        """Enqueue a gazetteer rebuild once this request commits; the entries appear when the worker is done."""
        if not request.user.has_perm(REBUILD_PERMISSION):
            raise PermissionDenied
        transaction.on_commit(lambda: gazetteer_rebuild.delay())
        self.message_user(
            request, "Rebuilding the gazetteer; the new entries appear here in a minute or so.", messages.SUCCESS
        )
        return HttpResponseRedirect(reverse("admin:personalization_gazetteerentry_changelist"))


@admin.register(GazetteerEntry)
class GazetteerEntryAdmin(RebuildButtonMixin, admin.ModelAdmin):
    list_display = ["surface", "kind", "value", "ref_id", "weight", "built_at"]
    list_filter = ["kind"]
    search_fields = ["surface", "value"]
    readonly_fields = ["kind", "surface", "value", "ref_id", "weight", "built_at"]
    show_full_result_count = False

    # The gazetteer is rebuilt from the catalog and the synonyms, never edited by hand.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False
