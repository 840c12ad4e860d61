"""Public pages: the tombstone page of a withdrawn handle, and a local resolver."""

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render

from handles.models import Handle


def _handle_or_404(prefix: str, suffix: str) -> Handle:
    handle = Handle.objects.by_name(prefix, suffix).select_related("prefix", "asset").first()
    if handle is None:
        raise Http404("No such handle.")
    return handle


def tombstone(request: HttpRequest, prefix: str, suffix: str) -> HttpResponse:
    """What a withdrawn handle identified, when and why it was withdrawn: HTTP 410 Gone."""
    handle = _handle_or_404(prefix, suffix)
    if handle.status != Handle.Status.TOMBSTONED:
        if handle.status == Handle.Status.DELETED:
            raise Http404("This handle was deleted.")
        return HttpResponseRedirect(handle.target_url)
    return render(request, "handles/tombstone.html", {"handle": handle}, status=410)


def resolve(request: HttpRequest, prefix: str, suffix: str) -> HttpResponse:
    """A local resolver: /handles/<prefix>/<suffix> goes where the Handle server should send people."""
    handle = _handle_or_404(prefix, suffix)
    if handle.status == Handle.Status.DELETED:
        raise Http404("This handle was deleted.")
    if handle.status == Handle.Status.TOMBSTONED:
        return tombstone(request, prefix, suffix)
    return HttpResponseRedirect(handle.target_url)
