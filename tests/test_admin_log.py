"""Desk actions done through the project's own admin pages appear in the admin's "Recent actions" and in
each object's history, as the admin's own changes do (LogEntry)."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.urls import reverse

from handles.desk.models import BulkJob
from handles.models import Handle
from handles.repair.models import ImportBatch
from tests.factories import HandleFactory, PrefixFactory

pytestmark = pytest.mark.django_db


def logged(obj) -> list[tuple[int, str]]:
    return list(LogEntry.objects.filter(object_id=str(obj.pk), content_type__model=obj._meta.model_name)
                .order_by("pk").values_list("action_flag", "change_message"))


def test_desk_actions_are_in_recent_actions_and_the_history(staff_client, staff_user, settings):
    prefix = PrefixFactory(is_default=True)
    staff_client.post(reverse("admin:handles_handle_add"), {
        "prefix": prefix.pk, "suffix": "logged-1", "target_url": "https://example.org/1", "_mint": "1"})
    handle = Handle.objects.get(suffix="logged-1")
    assert logged(handle) == [(ADDITION, f"Minted; request #{handle.requests.get().pk} queued.")]

    staff_client.post(reverse("admin:handles_handle_redirect", args=[handle.pk]), {"target_url": "https://example.org/2"})
    staff_client.post(reverse("admin:handles_handle_tombstone", args=[handle.pk]), {"reason": "Withdrawn"})
    assert [message for _, message in logged(handle)][1:] == [
        f"Redirect queued as request #{handle.requests.order_by('pk')[1].pk}.",
        f"Tombstone queued as request #{handle.requests.order_by('pk')[2].pk}."]

    # An action on a small selection logs each handle it changed; a large one logs its bulk job.
    others = [HandleFactory(prefix=prefix) for _ in range(3)]
    changelist = reverse("admin:handles_handle_changelist")
    staff_client.post(changelist, {"action": "verify_selected", "_selected_action": [h.pk for h in others[:2]]})
    assert [logged(h) for h in others] == [[(CHANGE, "Verify.")], [(CHANGE, "Verify.")], []]
    settings.HANDLES_DESK_INLINE_LIMIT = 1
    staff_client.post(changelist, {"action": "verify_selected", "_selected_action": [h.pk for h in others]})
    job = BulkJob.objects.get()
    assert logged(job)[0][0] == ADDITION

    staff_client.post(reverse("admin:handles_repair_importbatch_add"), {
        "file": _upload(), "encoding": "utf-8", "delimiter": "auto"})
    batch = ImportBatch.objects.get()
    assert logged(batch) == [(ADDITION, "Uploaded legacy.csv.")]

    index = staff_client.get(reverse("admin:index")).content.decode()
    recent = index[index.index("Recent actions"):]
    for shown in (str(handle), str(others[0]), str(job), str(batch)):
        assert shown in recent
    history = staff_client.get(reverse("admin:handles_handle_history", args=[handle.pk])).content.decode()
    assert "Tombstone queued as request" in history


def _upload():
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("legacy.csv", b"handle,url\n20.500.12345/old-1,https://example.org/old-1\n",
                              content_type="text/csv")
