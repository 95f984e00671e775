"""The Editors and Staff groups (personalization/roles.py holds their definition)."""

from django.db import migrations


def create_roles(apps, schema_editor):
    from personalization.roles import roles_sync

    roles_sync(apps=apps, using=schema_editor.connection.alias)


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("mediachat", "0001_initial"),
        ("personalization", "0001_initial"),
        ("training", "0002_permissions"),
    ]

    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
