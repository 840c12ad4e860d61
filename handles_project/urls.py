from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

admin.site.site_header = "Handles"
admin.site.site_title = "Handles"
admin.site.index_title = "Handle desk"
# The handle list needs the full width; the admin index and breadcrumbs already navigate.
admin.site.enable_nav_sidebar = False

urlpatterns = [
    # The API first: Django tries the patterns in turn, and the ArchivesSpace lookups are the busiest calls.
    path("api/v1/", include("handles.api.urls")),
    path("", RedirectView.as_view(pattern_name="admin:index", permanent=False)),
    path("admin/", admin.site.urls),
    path("browse/", include("handles.desk.urls")),
    path("", include("handles.urls")),
]
