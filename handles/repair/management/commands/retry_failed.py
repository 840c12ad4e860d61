"""`manage.py retry_failed import|repair ID`: give an incomplete job's failed requests fresh attempts."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from handles.exceptions import HandleServiceError
from handles.labels import counted
from handles.repair import services
from handles.repair.management.commands._wait import add_wait_arguments, report_settled, wait_until_settled
from handles.repair.models import ImportBatch, RepairJob

KINDS = {
    "import": (lambda pk: ImportBatch.objects.defer("content").get(pk=pk),
               lambda job: services.import_batch_retry_failed(batch=job), services.import_batch_settle),
    "repair": (lambda pk: RepairJob.objects.get(pk=pk),
               lambda job: services.repair_job_retry_failed(job=job), services.repair_job_settle),
}


class Command(BaseCommand):
    help = ("Retry the failed requests of an import or a repair that ended incomplete (as its admin page's "
            "'Retry the failed requests' does): each gets a fresh set of attempts and the job verifies again.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=sorted(KINDS), help="import or repair")
        parser.add_argument("id", type=int, help="The import's or repair's number (Import #12: 12).")
        add_wait_arguments(parser, "retried change")

    def handle(self, *args: Any, **options: Any) -> None:
        load, retry, settle = KINDS[options["kind"]]
        try:
            job = load(options["id"])
        except (ImportBatch.DoesNotExist, RepairJob.DoesNotExist):
            raise CommandError(f"There is no {options['kind']} #{options['id']}.") from None
        try:
            retried = retry(job)
        except HandleServiceError as exc:
            raise CommandError(exc.message) from None
        self.stdout.write(f"{job}: {counted(retried, 'failed request')} queued again; the worker (qcluster) verifies each.")
        job = load(job.pk)
        if options["wait"]:
            job = wait_until_settled(self, job, reload=load, settle=settle, timeout=options["timeout"])
        if job.finished:
            report_settled(self, job)
        else:
            self.stdout.write(f"{job} is {job.get_state_display().lower()}; add --wait to wait for the server's "
                              "confirmation.")
