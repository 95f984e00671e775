from django.core.management.base import BaseCommand

from personalization.understanding.defaults import intents_load_defaults


class Command(BaseCommand):
    help = "Add the default intents of the media assistant and their examples, where missing (editors' data is kept)."

    def handle(self, *args, **options) -> None:
        added = intents_load_defaults()
        self.stdout.write(self.style.SUCCESS(f"Default intents loaded: {added} examples added."))
