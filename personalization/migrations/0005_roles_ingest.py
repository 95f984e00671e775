"""Give the Editors and Staff groups their permissions on the data-collection models."""

from django.db import migrations


def sync_roles(apps, schema_editor):
    from personalization.roles import roles_sync

    roles_sync(apps=apps, using=schema_editor.connection.alias)


class Migration(migrations.Migration):
    dependencies = [
        ("personalization", "0004_content_fingerprint"),
    ]

    operations = [migrations.RunPython(sync_roles, migrations.RunPython.noop)]
