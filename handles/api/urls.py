"""/api/v1/: one route per resource, one view per method (see handles.api.http.route)."""

from django.urls import path, re_path, register_converter
from django.views.generic import RedirectView

from handles.api import views
from handles.api.http import route


class SuffixConverter:
    """Like <path:>, but a newline matches too, so the view can refuse it with a JSON error."""

    regex = r"[\s\S]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(SuffixConverter, "suffix")

app_name = "handles_api"

urlpatterns = [
    # First: Django tries the patterns in turn, and the ArchivesSpace lookups are the busiest calls.
    path("lookup/asset", route(GET=views.lookup_asset), name="lookup_asset"),
    path("lookup/handle", route(GET=views.lookup_handle), name="lookup_handle"),
    path("lookup/url", route(GET=views.lookup_url), name="lookup_url"),
    path("", RedirectView.as_view(pattern_name="handles_api:docs", permanent=False), name="root"),
    path("handles", route(GET=views.list_handles, POST=views.create_handle), name="handles"),
    path("handles/<str:prefix>/<suffix:suffix>",
         route(GET=views.get_handle, POST=views.update_handle, PATCH=views.update_handle, DELETE=views.delete_handle),
         name="handle"),
    path("requests/<int:request_id>", route(GET=views.get_request), name="request"),
    path("resolve/<str:prefix>/<suffix:suffix>", route(GET=views.resolve_handle), name="resolve"),
    path("prefixes/<str:prefix>/remote-handles", route(GET=views.remote_handles), name="remote_handles"),
    path("assets/publish", route(POST=views.publish_asset), name="asset_publish"),
    path("assets/unpublish", route(POST=views.unpublish_asset), name="asset_unpublish"),
    path("assets/change-url", route(POST=views.change_asset_url), name="asset_change_url"),
    path("assets/delete", route(POST=views.delete_asset), name="asset_delete"),
    path("iiif/metadata", route(GET=views.iiif_metadata), name="iiif_metadata"),
    path("openapi.json", route(GET=views.openapi_document), name="openapi"),
    path("docs", route(GET=views.docs), name="docs"),
    re_path(r"^(?P<path>[\s\S]*)$", views.not_found),  # JSON 404s, never the HTML page
]
