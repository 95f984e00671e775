"""Staff keep the decoding profiles (personalization/roles.py holds the role definitions)."""

from django.db import migrations


def sync_roles(apps, schema_editor):
    from personalization.roles import roles_sync

    roles_sync(apps=apps, using=schema_editor.connection.alias)


class Migration(migrations.Migration):
    dependencies = [
        ("mediachat", "0002_decoding_profiles_first_token"),
        ("personalization", "0005_roles_ingest"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
