"""The desk's own records: bulk jobs over many handles, and collections for browsing.

A bulk job never changes a handle itself: it calls the per-handle services of handles.services, one
handle at a time, so every change is still one HandleRequest in the history. Writes to these models go
through handles.desk.services.
"""

from __future__ import annotations

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Count, Q
from django.urls import reverse

from handles.jobs import Job, JobState
from handles.models import Handle, HandleRequest


class Collection(models.Model):
    """A named group of assets, defined by a rule over Asset fields rather than a membership table.

    Assets arrive by import, API and admin from systems that know their own collections; a rule (source
    system, plus an external-id prefix and/or a URL prefix) needs nothing kept in sync when they do.
    """

    name = models.CharField(max_length=200, unique=True)
    source_system = models.CharField(
        max_length=64, validators=[RegexValidator(r"^[a-z0-9][a-z0-9_.-]*$", "Lower-case letters, digits, '.', "
                                                                               "'_' and '-'.")],
        help_text="The assets' source system, such as dams or archivesspace.",
    )
    external_id_prefix = models.CharField(max_length=255, blank=True,
                                          help_text="Optional: only assets whose external id starts with this.")
    url_prefix = models.CharField(max_length=2000, blank=True,
                                  help_text="Optional: only assets whose URL starts with this, e.g. "
                                            "https://dams.example.edu/collections/maps/")
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def handle_q(self) -> Q:
        """The handles of this collection's assets."""
        q = Q(asset__source_system=self.source_system)
        if self.external_id_prefix:
            q &= Q(asset__external_id__startswith=self.external_id_prefix)
        if self.url_prefix:
            q &= Q(asset__url__startswith=self.url_prefix)
        return q


class BulkJob(Job):
    """One action over a selection of handles (or failed requests), run in the background in chunks.
    Done only once the server confirmed each request it queued (verifying until then)."""

    class Kind(models.TextChoices):
        REDIRECT_RULE = "redirect_rule", "Redirect by find and replace"
        TOMBSTONE = "tombstone", "Tombstone"
        RESTORE = "restore", "Restore"
        DELETE = "delete", "Delete from the Handle server"
        VERIFY = "verify", "Verify against the server"
        RETRY = "retry", "Retry failed requests"

    # Its state, progress (handles processed of progress_total), counts (by item outcome: ok, skipped,
    # failed), verification tally, who and when, error, lease and checkpoint: handles.jobs.Job.
    state_labels = {JobState.DONE: "Done: verified on the server"}

    kind = models.CharField(max_length=20, choices=Kind.choices)
    parameters = models.JSONField(default=dict, blank=True,
                                  help_text="What to do to each: reason, successor URL, find and replace.")
    selection = models.JSONField(default=dict, blank=True,
                                 help_text='Which objects: {"ids": [...]} or {"filters": {...}} (the list filters).')
    description = models.CharField(max_length=500, blank=True, help_text="The selection, in words.")
    # Unlike the other jobs, null until the job starts and counts its selection (Job declares it not null).
    progress_total = models.PositiveIntegerField(  # type: ignore[assignment]
        null=True, blank=True, help_text="Counted when the job starts.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "bulk job"
        indexes = [models.Index(fields=["state", "lease_until"], name="bulkjob_state_idx")]

    def __str__(self) -> str:
        return f"Job #{self.pk}: {self.get_kind_display()}"

    def get_absolute_url(self) -> str:
        return reverse("admin:handles_desk_bulkjob_change", args=[self.pk])

    @property
    def on_requests(self) -> bool:
        """A retry job selects failed requests; every other kind selects handles."""
        return self.kind == self.Kind.RETRY

    @property
    def percent(self) -> int:
        """While verifying and after, the share of its requests verified on the server; before, of handles done."""
        if self.state == JobState.DONE:
            return 100
        if self.state in (JobState.VERIFYING, JobState.INCOMPLETE):
            requests = sum(self.verification.values())
            return min(100, int(100 * self.verification.get("success", 0) / requests)) if requests else 0
        if not self.progress_total:
            return 0
        return min(100, int(100 * self.progress_done / self.progress_total))

    # Its counts by item outcome, under the names the job page, the dashboard and the report use.
    @property
    def succeeded(self) -> int:
        return self.counts.get(BulkJobItem.Outcome.OK, 0)

    @property
    def skipped(self) -> int:
        return self.counts.get(BulkJobItem.Outcome.SKIPPED, 0)

    @property
    def failed(self) -> int:
        return self.counts.get(BulkJobItem.Outcome.FAILED, 0)


class BulkJobItemQuerySet(models.QuerySet):
    def outcome_counts(self) -> dict[str, int]:
        return dict(self.values_list("outcome").annotate(n=Count("id")).order_by())


class BulkJobItem(models.Model):
    """What a job did to one handle (or request). Written in the same transaction as the change itself,
    so a job resumed after a crash neither repeats nor skips anything."""

    class Outcome(models.TextChoices):
        OK = "ok", "Queued"
        SKIPPED = "skipped", "Skipped"
        FAILED = "failed", "Failed"

    job = models.ForeignKey(BulkJob, on_delete=models.CASCADE, related_name="items")
    key = models.BigIntegerField(help_text="The primary key of the handle (or, for a retry, the request).")
    handle = models.ForeignKey(Handle, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    full_handle = models.CharField(max_length=330)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    message = models.TextField(blank=True)
    before = models.CharField(max_length=2000, blank=True)
    after = models.CharField(max_length=2000, blank=True)
    request = models.ForeignKey(HandleRequest, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    objects = BulkJobItemQuerySet.as_manager()

    class Meta:
        ordering = ["job", "key"]
        constraints = [models.UniqueConstraint(fields=["job", "key"], name="bulkjob_item_once")]
        indexes = [models.Index(fields=["job", "outcome", "key"], name="bulkjob_item_outcome_idx")]

    def __str__(self) -> str:
        return f"{self.full_handle}: {self.outcome}"
