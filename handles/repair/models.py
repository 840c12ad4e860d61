"""Legacy imports, reconciliation with the Handle server, and resolution health checks.

These models record jobs and what they found. Changes to handles themselves are made by handles.services
(its "Import and repair (bulk)" section) and pushed to the server through the request queue.
Writes to the models here go through handles.repair.services.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.admin.decorators import display as admin_display
from django.db import models
from django.db.models import Count, Q

from handles.jobs import ENDED, Job, JobState
from handles.models import Asset, Handle, HandleRequest, Prefix

# The fields of our records that an import file's columns can be mapped to.
MAPPING_FIELDS = ("handle", "prefix", "suffix", "url", "source_system", "external_id", "title")


class ImportMode(models.TextChoices):
    ADOPT = "adopt", "Adopt: the handles already resolve; record them, then verify them on the server"
    PUSH = "push", "Push: create the missing handles and update the mismatched ones on the server"


class ImportPreset(models.Model):
    """A saved column mapping for a kind of file (e.g. a CABB validation report)."""

    class Delimiter(models.TextChoices):
        AUTO = "auto", "Detect"
        COMMA = ",", "Comma"
        SEMICOLON = ";", "Semicolon"
        TAB = "\t", "Tab"

    class Encoding(models.TextChoices):
        UTF8 = "utf-8", "UTF-8 (with or without BOM)"
        CP1252 = "cp1252", "Windows-1252 (Excel on Windows)"
        LATIN1 = "latin-1", "ISO-8859-1"

    name = models.CharField(max_length=100, unique=True)
    handle_column = models.CharField(max_length=200, blank=True,
                                     help_text="Column holding the whole handle (11084/99, hdl:..., https://hdl.handle.net/...).")
    prefix_column = models.CharField(max_length=200, blank=True)
    suffix_column = models.CharField(max_length=200, blank=True)
    url_column = models.CharField(max_length=200, blank=True, help_text="Column holding the target URL.")
    source_system_column = models.CharField(max_length=200, blank=True)
    external_id_column = models.CharField(max_length=200, blank=True)
    title_column = models.CharField(max_length=200, blank=True)
    prefix = models.ForeignKey(Prefix, on_delete=models.SET_NULL, null=True, blank=True,
                               help_text="Prefix of rows that give only a suffix.")
    source_system = models.CharField(max_length=64, blank=True, help_text="Source system of rows that name none.")
    url_template = models.CharField(max_length=2000, blank=True,
                                    help_text="Overrides the prefix's template, e.g. https://example.edu/{external_id}")
    mode = models.CharField(max_length=10, choices=ImportMode.choices, default=ImportMode.ADOPT)
    encoding = models.CharField(max_length=10, choices=Encoding.choices, default=Encoding.UTF8)
    delimiter = models.CharField(max_length=4, choices=Delimiter.choices, default=Delimiter.AUTO)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def mapping(self) -> dict[str, str]:
        return {name: getattr(self, f"{name}_column") for name in MAPPING_FIELDS}


IMPORT_LABELS: dict[str, str] = {JobState.VERIFYING: "Applied; waiting for the server to confirm each handle",
                 JobState.INCOMPLETE: "Applied; some handles failed on the server"}


class ImportBatch(Job):
    """One uploaded file: parsed, classified row by row (the dry run), then applied in one transaction."""

    class Step(models.TextChoices):
        """Which step the job's one state is about: an upload is done once its columns can be mapped; the dry
        run (analyse) and the apply are each one transaction; the push (push mode) reads each new handle from
        the server and queues its request. Verifying, done and incomplete follow the apply or the push."""

        UPLOAD = "upload", "Upload"
        ANALYSE = "analyse", "Dry run"
        APPLY = "apply", "Apply"
        PUSH = "push", "Push"

    step = models.CharField(max_length=8, choices=Step.choices, default=Step.UPLOAD)
    state = models.CharField(max_length=10, choices=JobState.choices, default=JobState.DONE)
    file_name = models.CharField(max_length=255)
    file_size = models.PositiveBigIntegerField(default=0)
    file_sha256 = models.CharField(max_length=64)
    content = models.BinaryField(editable=False)
    encoding = models.CharField(max_length=10, default="utf-8")
    delimiter = models.CharField(max_length=4, default=",")
    header = models.JSONField(default=list, blank=True)
    mapping = models.JSONField(default=dict, blank=True)
    prefix = models.ForeignKey(Prefix, on_delete=models.PROTECT, null=True, blank=True,
                               help_text="Prefix of rows that give only a suffix.")
    source_system = models.CharField(max_length=64, blank=True)
    url_template = models.CharField(max_length=2000, blank=True)
    mode = models.CharField(max_length=10, choices=ImportMode.choices, default=ImportMode.ADOPT)
    preset = models.ForeignKey(ImportPreset, on_delete=models.SET_NULL, null=True, blank=True)
    analysed_at = models.DateTimeField(null=True, blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "import"
        verbose_name_plural = "imports"
        # The settler looks for verifying imports after every drain of the queue: a tiny partial index.
        indexes = [models.Index(fields=["state"], condition=Q(state="verifying"), name="import_verifying_idx")]

    def __str__(self) -> str:
        return f"Import #{self.pk} {self.file_name}"

    @property
    @admin_display(description="State", ordering="state")
    def state_label(self) -> str:
        """The step and its state in the words the import pages have always used."""
        if self.state in (JobState.QUEUED, JobState.RUNNING):
            return "Dry run in progress" if self.step == self.Step.ANALYSE else "Applying"
        if self.state == JobState.DONE:
            done: dict[str, str] = {self.Step.UPLOAD: "Uploaded: map the columns",
                                    self.Step.ANALYSE: "Dry run done: review and apply"}
            return done.get(self.step, "Applied and verified on the server")
        return IMPORT_LABELS.get(self.state) or super().state_label

    @property
    def analysed(self) -> bool:
        """Its dry run is done and nothing is applied: review and apply."""
        return self.step == self.Step.ANALYSE and self.state == JobState.DONE

    @property
    def applied(self) -> bool:
        """Applied, and every handle verified on the server."""
        return self.step in (self.Step.APPLY, self.Step.PUSH) and self.state == JobState.DONE

    @property
    def conflicts_resolvable(self) -> bool:
        """Its dry run is done (and it is not under way): a handle the file cites for several records can be
        given to one of them."""
        return self.step != self.Step.UPLOAD and self.state in (JobState.DONE, JobState.VERIFYING, JobState.INCOMPLETE)

    @property
    def reconfigurable(self) -> bool:
        """Not applied and not under way: its mapping may change and its dry run run again."""
        return self.applied_at is None and self.step in (self.Step.UPLOAD, self.Step.ANALYSE) and self.state in ENDED


class ConflictResolution(models.TextChoices):
    KEPT = "kept", "Keeps the handle"
    FLAGGED = "flagged", "Flagged: needs a handle"
    NEW_HANDLE = "new_handle", "Given a new handle"


# The lines an import leaves out (imports nothing for them): the command exits non-zero, the admin warns.
LEFT_OUT = ("invalid", "conflict")


class ImportRowQuerySet(models.QuerySet):
    def outcome_counts(self) -> dict[str, int]:
        return dict(self.values_list("outcome").annotate(n=Count("id")).order_by())

    def file_conflicts(self) -> ImportRowQuerySet:
        """Lines of a handle the file itself cites with different targets or records (each such handle has
        two or more): the conflicts page lists them grouped by handle."""
        twice = (self.model.objects.filter(batch_id=models.OuterRef("batch_id"), prefix_id=models.OuterRef("prefix_id"),
                                           suffix_key=models.OuterRef("suffix_key"), outcome="conflict")
                 .exclude(pk=models.OuterRef("pk")))
        return self.filter(outcome="conflict", prefix__isnull=False).filter(models.Exists(twice))


class ImportRow(models.Model):
    """The dry run's verdict on one line of the file, and after applying, what it created."""

    class Outcome(models.TextChoices):
        NEW = "new", "New"
        SAME = "same", "Already present, same target"
        CONFLICT = "conflict", "Conflict"
        INVALID = "invalid", "Invalid"
        DUPLICATE = "duplicate", "Duplicate in the file"

    # No single-column indexes on the foreign keys: the composite index serves the reads, and each index
    # would cost every bulk insert and link update of 100,000 lines.
    batch = models.ForeignKey(ImportBatch, on_delete=models.CASCADE, related_name="rows", db_index=False)
    line = models.PositiveIntegerField(help_text="Line number in the file (the header is line 1).")
    handle_text = models.CharField(max_length=600, blank=True, help_text="The handle, as PREFIX/SUFFIX when valid.")
    prefix = models.ForeignKey(Prefix, on_delete=models.PROTECT, null=True, blank=True, related_name="+",
                               db_index=False)
    suffix = models.CharField(max_length=255, blank=True)
    suffix_key = models.CharField(max_length=255, blank=True)
    target_url = models.CharField(max_length=2000, blank=True)
    source_system = models.CharField(max_length=64, blank=True)
    external_id = models.CharField(max_length=255, blank=True)
    title = models.CharField(max_length=1000, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    primary = models.BooleanField(default=False, help_text="Planned as its asset's primary handle.")
    reason = models.CharField(max_length=1000, blank=True)
    vendor = models.BooleanField(default=False, help_text="The suffix is in the prefix's vendor sequence.")
    # Links for the report, written for every line when an import is applied. No database constraint: its
    # check of 200,000 references at commit would cost seconds, and handles and requests are never deleted.
    handle = models.ForeignKey(Handle, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                               db_index=False, db_constraint=False)
    request = models.ForeignKey(HandleRequest, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                                db_index=False, db_constraint=False)
    # A handle the file cites for two records (an in-file conflict): what the Handle server resolved it to
    # when the dry run read it, and what staff decided on the conflicts page.
    server_url = models.CharField(max_length=2000, blank=True)
    server_note = models.CharField(max_length=300, blank=True, help_text="Why the server's URL is not known.")
    resolution = models.CharField(max_length=10, choices=ConflictResolution.choices, blank=True)
    resolution_note = models.CharField(max_length=500, blank=True)

    objects = ImportRowQuerySet.as_manager()

    class Meta:
        ordering = ["batch", "line"]
        indexes = [models.Index(fields=["batch", "outcome", "line"], name="import_row_outcome_idx")]

    def __str__(self) -> str:
        return f"line {self.line}: {self.handle_text} ({self.outcome})"


class ReconciliationRun(Job):
    """One comparison of a prefix's handles on the Handle server with our records."""

    prefix = models.ForeignKey(Prefix, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["-id"]
        verbose_name = "reconciliation"
        verbose_name_plural = "reconciliations"

    def __str__(self) -> str:
        return f"Reconciliation #{self.pk} of {self.prefix.prefix}"

    @property
    def drift(self) -> int:
        return sum(self.counts.get(kind, 0) for kind in ReconciliationRow.Kind.values)


class ReconciliationRowQuerySet(models.QuerySet):
    def to_repair(self, *, kinds: list[str], row_ids: list[int]) -> ReconciliationRowQuerySet:
        """Rows not yet repaired (nor skipped), chosen by id if ids are given, else by class."""
        rows = self.filter(repair_request__isnull=True, repaired_at__isnull=True)
        return rows.filter(pk__in=row_ids) if row_ids else rows.filter(kind__in=kinds)


class ReconciliationRow(models.Model):
    """One handle whose server record differs from ours. In-sync handles are only counted."""

    class Kind(models.TextChoices):
        MISSING = "missing", "Missing on the server"
        URL_DIFFERS = "url_differs", "URL differs"
        ORPHAN = "orphan", "On the server, unknown here"
        DELETED_ON_SERVER = "deleted_on_server", "Deleted here, still on the server"
        TOMBSTONE_DRIFT = "tombstone_drift", "Tombstoned here, not pointing at its tombstone page"
        UNREADABLE = "unreadable", "Could not be read from the server"

    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="rows", db_index=False)
    kind = models.CharField(max_length=20, choices=Kind.choices)
    full_handle = models.CharField(max_length=330)
    handle = models.ForeignKey(Handle, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                               db_index=False)
    server_url = models.CharField(max_length=2000, blank=True)
    our_url = models.CharField(max_length=2000, blank=True, help_text="What the server should resolve to.")
    asset = models.ForeignKey(Asset, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
                              db_index=False, help_text="For an orphan: the asset its URL points at, if we know it.")
    vendor = models.BooleanField(default=False)
    note = models.CharField(max_length=500, blank=True)
    repair_request = models.ForeignKey(HandleRequest, on_delete=models.SET_NULL, null=True, blank=True,
                                       related_name="+", db_index=False)
    repaired_at = models.DateTimeField(null=True, blank=True)
    # Several repairs can work on one run: this says whose requests a row's is, so each repair is settled
    # on its own requests.
    repair_job = models.ForeignKey("RepairJob", on_delete=models.SET_NULL, null=True, blank=True, related_name="rows",
                                   db_index=False, help_text="The repair that queued (or skipped) this row.")

    objects = ReconciliationRowQuerySet.as_manager()

    class Meta:
        ordering = ["run", "kind", "full_handle"]
        constraints = [models.UniqueConstraint(fields=["run", "full_handle"], name="one_row_per_handle_per_run")]
        indexes = [
            models.Index(fields=["run", "kind", "id"], name="recon_row_kind_idx"),
            # Partial: most rows are never repaired, and a reconciliation inserts them by the thousand.
            models.Index(fields=["repair_job"], condition=Q(repair_job__isnull=False), name="recon_row_repair_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.full_handle}: {self.get_kind_display()}"


class RepairJob(Job):
    """Repairs chosen from a reconciliation's rows (whole classes or single rows), pushed through the queue.
    Done only once the server confirmed every request it queued."""

    state_labels = {JobState.RUNNING: "Queuing the repairs", JobState.DONE: "Done: verified on the server"}

    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="repairs")
    kinds = models.JSONField(default=list, blank=True)
    row_ids = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["state"], condition=Q(state="verifying"), name="repair_verifying_idx")]

    def __str__(self) -> str:
        return f"Repair #{self.pk} of reconciliation #{self.run_id}"



class HealthOutcome(models.TextChoices):
    CORRECT = "correct", "Resolves correctly"
    BROKEN = "broken", "Broken"
    WRONG_OBJECT = "wrong_object", "Resolves to the wrong object"
    TIMEOUT = "timeout", "Timed out"
    # Refused before any request (a private or loopback address, a scheme other than http(s)): we do not
    # know whether it resolves, so it is neither correct nor broken.
    NOT_CHECKED = "not_checked", "Not checked"


# A health check's detail when the Handle server lacks the handle: a repair from the health page creates it.
NOT_ON_SERVER = "The handle is not on the Handle server."


class HealthRun(Job):
    """One pass of resolution checks. Its counts over time make the health trend."""

    filters = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name = "health check"
        verbose_name_plural = "health checks"

    def __str__(self) -> str:
        return f"Health check #{self.pk}"

    @property
    def share_correct(self) -> float | None:
        checked = sum(self.counts.get(outcome, 0) for outcome in HealthOutcome.values)
        return self.counts.get(HealthOutcome.CORRECT, 0) / checked if checked else None


class HandleCheckQuerySet(models.QuerySet):
    def failing(self) -> HandleCheckQuerySet:
        """What staff act on: broken, wrong object, timed out, not checked."""
        return self.exclude(outcome=HealthOutcome.CORRECT)

    def latest_per_handle(self) -> HandleCheckQuerySet:
        """Each handle's latest check only (no later check of the same handle): the (handle, id) index."""
        later = HandleCheck.objects.filter(handle_id=models.OuterRef("handle_id"), pk__gt=models.OuterRef("pk"))
        return self.filter(~models.Exists(later))

    def shares_by(self, field: str) -> list[dict]:
        """Checked and correct handles grouped by a handle field path (e.g. handle__prefix__prefix)."""
        return list(self.values(group=models.F(field)).annotate(
            checked=Count("pk"), correct=Count("pk", filter=Q(outcome=HealthOutcome.CORRECT)),
            broken=Count("pk", filter=Q(outcome=HealthOutcome.BROKEN)),
            wrong=Count("pk", filter=Q(outcome=HealthOutcome.WRONG_OBJECT)),
            timeout=Count("pk", filter=Q(outcome=HealthOutcome.TIMEOUT)),
            not_checked=Count("pk", filter=Q(outcome=HealthOutcome.NOT_CHECKED)),
        ).order_by("group"))


class HandleCheck(models.Model):
    """One handle's check in one health run. Each run keeps its own results (unique per run and handle, so
    a resumed or repeated slice never records a handle twice); a handle's checks over the runs are its
    check history. Old runs' results are pruned (HANDLES_HEALTH_KEEP_RUNS); the runs' counts stay."""

    run = models.ForeignKey(HealthRun, on_delete=models.CASCADE, related_name="checks", db_index=False)
    handle = models.ForeignKey(Handle, on_delete=models.CASCADE, related_name="checks", db_index=False)
    checked_at = models.DateTimeField()
    outcome = models.CharField(max_length=12, choices=HealthOutcome.choices)
    server_url = models.CharField(max_length=2000, blank=True, help_text="The URL the Handle server gave.")
    final_url = models.CharField(max_length=2000, blank=True, help_text="Where following it ended.")
    http_status = models.PositiveSmallIntegerField(null=True, blank=True)
    hops = models.PositiveSmallIntegerField(default=0, help_text="Redirects followed.")
    attempts = models.PositiveSmallIntegerField(default=1)
    elapsed_ms = models.PositiveIntegerField(default=0)
    page_title = models.CharField(max_length=500, blank=True)
    title_score = models.FloatField(null=True, blank=True,
                                    help_text="How closely the page's title matches the object's (1 = exactly).")
    detail = models.CharField(max_length=1000, blank=True)

    objects = HandleCheckQuerySet.as_manager()

    class Meta:
        ordering = ["-checked_at"]
        constraints = [models.UniqueConstraint(fields=["run", "handle"], name="one_check_per_handle_per_run")]
        indexes = [
            models.Index(fields=["handle", "id"], name="check_handle_idx"),
            models.Index(fields=["run", "outcome", "handle"], name="check_run_outcome_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.handle_id}: {self.outcome}"


class AssetWithSeveralHandles(Asset):
    """Assets cited by more than one handle (a legacy 11084/99 and a vendor 11084/1742400039): the admin
    lists them so staff choose the primary handle; the others keep resolving to the same object."""

    class Meta:
        proxy = True
        verbose_name = "asset with several handles"
        verbose_name_plural = "assets with several handles"
