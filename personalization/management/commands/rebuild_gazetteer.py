from django.core.management.base import BaseCommand
from django.db.models import Count

from personalization.models import GazetteerEntry
from personalization.understanding.gazetteer import gazetteer_rebuild


class Command(BaseCommand):
    help = "Rebuild the entity gazetteer from the catalog and the editors' synonyms, and print counts per kind."

    def handle(self, *args, **options) -> None:
        total = gazetteer_rebuild()
        for row in GazetteerEntry.objects.values("kind").annotate(n=Count("id")).order_by("kind"):
            self.stdout.write(f"{row['kind']}: {row['n']}")
        self.stdout.write(self.style.SUCCESS(f"{total} gazetteer entries."))
