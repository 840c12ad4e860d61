"""Who may subscribe and look at the logs, and the schedules of the sweep and the watchdog, by migration
so that every deployment has them. Webhook endpoints stay with superusers (or whoever they grant)."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP_PERMS = {
    "Handle staff": ["view_subscription", "add_subscription", "change_subscription", "delete_subscription",
                     "view_notification", "view_delivery", "view_deliveryattempt", "view_watchdogrun"],
    "Collection managers": ["view_subscription", "add_subscription", "change_subscription", "delete_subscription",
                            "view_watchdogrun"],
}
SCHEDULES = {
    "handles notify: digests and delivery retries": {"func": "handles.notify.tasks.notify_sweep", "minutes": 1},
    "handles: prefix watchdog": {"func": "handles.notify.tasks.watchdog_all", "minutes": 5},
}


def grant(apps, schema_editor):
    app_config = apps.get_app_config("handles_notify")
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for name, codenames in GROUP_PERMS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.add(*Permission.objects.filter(content_type__app_label="handles_notify",
                                                         codename__in=codenames))


def schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    for name, fields in SCHEDULES.items():
        # get_or_create: an operator who changed the watchdog's interval in the admin keeps it.
        Schedule.objects.get_or_create(name=name, defaults={**fields, "schedule_type": "I", "repeats": -1})


class Migration(migrations.Migration):
    dependencies = [
        ("handles_notify", "0001_initial"),
        ("handles", "0002_groups_and_schedules"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("django_q", "0019_alter_task_options_alter_ormq_key_alter_ormq_lock_and_more"),
    ]
    operations = [
        migrations.RunPython(grant, migrations.RunPython.noop),
        migrations.RunPython(schedule, migrations.RunPython.noop),
    ]
