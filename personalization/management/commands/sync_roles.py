from django.core.management.base import BaseCommand

from personalization.roles import roles_sync


class Command(BaseCommand):
    help = "Create or repair the Editors and Staff groups so they hold exactly the permissions of their role."

    def handle(self, *args, **options) -> None:
        for role, count in roles_sync(using=options["database"]).items():
            self.stdout.write(f"{role}: {count} permissions")

    def add_arguments(self, parser) -> None:
        parser.add_argument("--database", default="default", help="The database to write to.")
