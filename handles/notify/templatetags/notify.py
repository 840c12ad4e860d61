from django import template

from handles.models import Prefix
from handles.notify.models import WatchdogRun

register = template.Library()


@register.inclusion_tag("admin/notify/lights.html")
def watchdog_lights() -> dict:
    """A light per prefix on the dashboard: the watchdog's latest run (grey: not watched yet)."""
    rows = []
    for prefix in Prefix.objects.order_by("prefix"):
        run = WatchdogRun.objects.filter(prefix=prefix).order_by("-pk").first()
        rows.append({"prefix": prefix, "run": run})
    return {"rows": rows}
