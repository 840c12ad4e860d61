"""Who may import and repair, and the schedules that keep watch, created by migration for every deployment."""

from datetime import timedelta

from django.contrib.auth.management import create_permissions
from django.db import migrations
from django.utils import timezone

STAFF_PERMS = [
    "view_importpreset", "add_importpreset", "change_importpreset", "delete_importpreset",
    "view_importbatch", "add_importbatch", "change_importbatch",
    "view_importrow",
    "view_reconciliationrun", "add_reconciliationrun", "change_reconciliationrun",
    "view_reconciliationrow", "view_repairjob", "add_repairjob",
    "view_healthrun", "add_healthrun", "view_handlecheck",
    "view_assetwithseveralhandles", "change_assetwithseveralhandles",
]
MANAGER_PERMS = [
    "view_importbatch", "view_importrow", "view_reconciliationrun", "view_reconciliationrow", "view_healthrun",
    "view_handlecheck", "view_assetwithseveralhandles",
]
GROUPS = {"Handle staff": STAFF_PERMS, "Collection managers": MANAGER_PERMS}
# Daily and weekly (not cron: that would need the croniter package), first run in the small hours.
SCHEDULES = {
    "handles: reconcile every prefix (nightly)": {
        "func": "handles.repair.tasks.reconcile_all_prefixes", "schedule_type": "D", "hour": 2},
    "handles: check resolution health (weekly)": {
        "func": "handles.repair.tasks.check_health_everywhere", "schedule_type": "W", "hour": 3},
}


def grant(apps, schema_editor):
    app_config = apps.get_app_config("handles_repair")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*Permission.objects.filter(content_type__app_label="handles_repair",
                                                         codename__in=codenames))


def create_schedules(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    tomorrow = timezone.now().replace(minute=30, second=0, microsecond=0) + timedelta(days=1)
    for name, fields in SCHEDULES.items():
        fields = dict(fields)
        next_run = tomorrow.replace(hour=fields.pop("hour"))
        Schedule.objects.get_or_create(name=name, defaults={**fields, "repeats": -1, "next_run": next_run})


class Migration(migrations.Migration):
    dependencies = [
        ("handles_repair", "0001_initial"),
        ("handles", "0002_groups_and_schedules"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]
    operations = [
        migrations.RunPython(grant, migrations.RunPython.noop),
        migrations.RunPython(create_schedules, migrations.RunPython.noop),
    ]
