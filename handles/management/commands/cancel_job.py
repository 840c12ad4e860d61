"""`manage.py cancel_job KIND ID`: stop a long job, as the Cancel button of its admin page does."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.core.management.base import BaseCommand, CommandError, CommandParser

from handles import jobs
from handles.exceptions import HandleServiceError


class Command(BaseCommand):
    help = ("Cancel a job: one that no worker has started stops at once; a running one stops at the end of the "
            "slice under way. What it already did stays done.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", help="bulk, import, reconcile, repair or health.")
        parser.add_argument("id", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            runner = jobs.runner(options["kind"])
        except HandleServiceError as exc:
            raise CommandError(exc.message) from None
        try:
            job = jobs.cancel(runner, options["id"])
        except HandleServiceError as exc:
            raise CommandError(exc.message) from None
        except ObjectDoesNotExist:  # the job's own lookup: jobs.cancel reads no other row
            raise CommandError(f"There is no {runner.label} #{options['id']}.") from None
        if runner.state_of(job) == jobs.CANCELLED:
            self.stdout.write(self.style.SUCCESS(f"{job}: cancelled."))
        else:
            self.stdout.write(self.style.SUCCESS(f"{job}: stops at the end of the slice under way."))
