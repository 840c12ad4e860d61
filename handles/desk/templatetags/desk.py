from typing import Any

from django import template
from django.template import Context

from handles.desk.selectors import dashboard

register = template.Library()


@register.inclusion_tag("admin/desk/dashboard.html", takes_context=True)
def desk_dashboard(context: Context) -> dict[str, Any]:
    """The dashboard on the admin's front page (figures from handles.desk.selectors.dashboard)."""
    return {"d": dashboard(), "perms": context.get("perms")}
