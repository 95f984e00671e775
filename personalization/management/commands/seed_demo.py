from django.core.management.base import BaseCommand

from personalization.demo.seed import demo_credentials, demo_seed


class Command(BaseCommand):
    help = "Load the demo catalog, demo readers with reading histories, and editor, staff and admin accounts."

    def handle(self, *args, **options) -> None:
        counts = demo_seed(stdout=self.stdout)
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo ready: {counts['items']} items ({counts['visible']} visible, {counts['drafts']} drafts, "
                f"{counts['archived']} archived, {counts['embargoed']} embargoed) in {counts['sections']} sections, "
                f"{counts['tags']} tags, {counts['authors']} authors, {counts['readers']} readers, "
                f"{counts['interactions']} interactions."
            )
        )
        self.stdout.write("Open http://127.0.0.1:8000/ for the chat and /admin/ to edit. Demo-only sign-ins:")
        for username, password, role in demo_credentials():
            self.stdout.write(f"  {username} / {password}  ({role})")
        self.stdout.write("Passwords are set when an account is created; a rerun leaves changed ones alone.")
