"""Every kind of job keeps the same fields (handles.jobs.Job), with one state machine: queued, running,
verifying, done, incomplete, failed, cancelled. An import's own states become a step (upload, analyse,
apply, push) beside that state; requested_by becomes created_by; reconciliations and health checks gain
the (empty) verification tally every job has."""

from django.conf import settings
from django.db import migrations, models

STATES = [("queued", "Queued"), ("running", "Running"), ("verifying", "Verifying on the server"), ("done", "Done"),
          ("incomplete", "Incomplete: some changes failed on the server"), ("failed", "Failed"),
          ("cancelled", "Cancelled")]


def _after_apply(batch) -> str:
    """The step an applied import is in: push mode with new lines pushes; otherwise the apply verifies."""
    return "push" if batch.mode == "push" and (batch.counts or {}).get("new", 0) else "apply"


def import_step_and_state(batch) -> tuple[str, str]:
    """(step, state) of an import from its state before this release."""
    old = batch.old_state
    if old == "uploaded":
        return "upload", "done"
    if old == "analysing":
        return "analyse", "running" if batch.lease_token else "queued"
    if old == "analysed":
        return "analyse", "done"
    if old == "applying":
        return ("push" if batch.applied_at else "apply"), "running" if batch.lease_token else "queued"
    if old in ("verifying", "incomplete"):
        return _after_apply(batch), old
    if old == "applied":
        return _after_apply(batch), "done"
    # failed, cancelled: in the dry run until something was applied
    return ("analyse" if batch.applied_at is None else _after_apply(batch)), old


def old_state(step: str, state: str) -> str:
    """The state before this release of an import in (step, state)."""
    if state in ("queued", "running"):
        return "analysing" if step == "analyse" else "applying"
    if state == "done":
        return {"upload": "uploaded", "analyse": "analysed"}.get(step, "applied")
    return state


def steps_from_states(apps, schema_editor):
    ImportBatch = apps.get_model("handles_repair", "ImportBatch")
    fields = ("pk", "old_state", "mode", "counts", "applied_at", "lease_token")
    for batch in ImportBatch.objects.only(*fields).iterator():
        step, state = import_step_and_state(batch)
        ImportBatch.objects.filter(pk=batch.pk).update(step=step, state=state)


def states_from_steps(apps, schema_editor):
    ImportBatch = apps.get_model("handles_repair", "ImportBatch")
    for batch in ImportBatch.objects.only("pk", "step", "state").iterator():
        ImportBatch.objects.filter(pk=batch.pk).update(old_state=old_state(batch.step, batch.state))


def _user():
    return models.ForeignKey(blank=True, null=True, on_delete=models.deletion.SET_NULL, related_name="+",
                             to=settings.AUTH_USER_MODEL)


class Migration(migrations.Migration):

    dependencies = [
        ("handles_repair", "0008_health_results_per_run"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        *(migrations.RenameField(model_name=model, old_name="requested_by", new_name="created_by")
          for model in ("importbatch", "reconciliationrun", "repairjob", "healthrun")),
        # An import: its old state is kept aside while the step and the one state are worked out from it.
        migrations.RemoveIndex(model_name="importbatch", name="import_verifying_idx"),
        migrations.RenameField(model_name="importbatch", old_name="state", new_name="old_state"),
        migrations.AddField(model_name="importbatch", name="step", field=models.CharField(
            choices=[("upload", "Upload"), ("analyse", "Dry run"), ("apply", "Apply"), ("push", "Push")],
            default="upload", max_length=8)),
        migrations.AddField(model_name="importbatch", name="state", field=models.CharField(
            choices=STATES, default="done", max_length=10)),
        # Elidable: it converts the rows of an earlier release, it seeds nothing (tests.migration_data).
        migrations.RunPython(steps_from_states, states_from_steps, elidable=True),
        migrations.RemoveField(model_name="importbatch", name="old_state"),
        migrations.AddIndex(model_name="importbatch", index=models.Index(
            condition=models.Q(state="verifying"), fields=["state"], name="import_verifying_idx")),
        *(migrations.AlterField(model_name=model, name="state", field=models.CharField(
            choices=STATES, default="queued", max_length=10)) for model in ("reconciliationrun", "repairjob", "healthrun")),
        *(migrations.AddField(model_name=model, name="verification", field=models.JSONField(
            blank=True, default=dict, help_text="What became of the job's requests (handles.jobs.Tally): success is "
                                                "verified on the server; error, queued, running; unpushed: lines "
                                                "without a request.")) for model in ("reconciliationrun", "healthrun")),
        *(migrations.AlterField(model_name=model, name="error", field=models.TextField(
            blank=True, help_text="Why the job itself stopped, or which of its changes failed."))
          for model in ("importbatch", "reconciliationrun", "repairjob", "healthrun")),
    ]
