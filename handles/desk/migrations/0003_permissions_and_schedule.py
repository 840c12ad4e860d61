"""The desk's permissions for the two roles, and the schedule that resumes stalled bulk jobs."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP_PERMS = {
    "Handle staff": ["view_bulkjob", "add_bulkjob", "change_bulkjob",
                     "view_collection", "add_collection", "change_collection"],
    "Collection managers": ["view_bulkjob", "view_collection"],
}


def grant(apps, schema_editor):
    # Permissions are normally made after all migrations; make ours now so the groups can hold them.
    app_config = apps.get_app_config("handles_desk")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GROUP_PERMS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*Permission.objects.filter(content_type__app_label="handles_desk",
                                                         codename__in=codenames))


def schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.update_or_create(
        name="handles desk: resume stalled bulk jobs",
        defaults={"func": "handles.desk.tasks.resume_bulk_jobs", "schedule_type": "I", "minutes": 1,
                  "repeats": -1},
    )


class Migration(migrations.Migration):
    dependencies = [
        ("handles_desk", "0002_search_indexes"),
        ("handles", "0002_groups_and_schedules"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]

    operations = [
        migrations.RunPython(grant, migrations.RunPython.noop),
        migrations.RunPython(schedule, migrations.RunPython.noop),
    ]
