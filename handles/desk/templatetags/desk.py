from django import template

from handles.desk.selectors import dashboard

register = template.Library()


@register.inclusion_tag("admin/desk/dashboard.html", takes_context=True)
def desk_dashboard(context) -> dict:
    """The dashboard on the admin's front page (figures from handles.desk.selectors.dashboard)."""
    return {"d": dashboard(), "perms": context.get("perms")}
