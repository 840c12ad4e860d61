"""Roles and the sweep schedule, created by migration so that every deployment has them."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

STAFF_PERMS = [
    "view_handle", "add_handle", "change_handle",
    "view_asset", "add_asset", "change_asset",
    "view_handlerequest", "view_prefix",
]
MANAGER_PERMS = ["view_handle", "view_asset", "view_handlerequest", "view_prefix"]
GROUPS = {"Handle staff": STAFF_PERMS, "Collection managers": MANAGER_PERMS}


def create_groups(apps, schema_editor):
    # Permissions are normally made after all migrations; make them now so the groups can hold them.
    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set(Permission.objects.filter(content_type__app_label="handles", codename__in=codenames))


def create_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="handles: sweep the request queue",
        defaults={"func": "handles.tasks.sweep_requests", "schedule_type": "I", "minutes": 1, "repeats": -1},
    )


class Migration(migrations.Migration):
    dependencies = [
        ("handles", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]
    operations = [
        migrations.RunPython(create_groups, migrations.RunPython.noop),
        migrations.RunPython(create_schedules, migrations.RunPython.noop),
    ]
