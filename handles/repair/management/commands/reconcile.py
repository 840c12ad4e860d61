"""`manage.py reconcile PREFIX`: compare the Handle server's handles with ours; optionally repair."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from handles.exceptions import HandleServiceError
from handles.models import Prefix
from handles.repair import reconcile, selectors, services
from handles.repair.management.commands._wait import (
    add_background_arguments,
    add_wait_arguments,
    report_end,
    report_settled,
    wait_for_job,
    wait_until_settled,
)
from handles.repair.models import JobState, ReconciliationRow, ReconciliationRun, RepairJob

KINDS = ReconciliationRow.Kind


class Command(BaseCommand):
    help = ("Reconcile a prefix: page through the Handle server's listing, read each handle's URL and compare it "
            "with our records. With --repair CLASS, show what a repair would queue (dry run); add --apply to "
            "queue it (the worker pushes each change and verifies it on the server), and --wait to wait for "
            "that verification.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix", help="The prefix to reconcile, e.g. 11084.")
        parser.add_argument("--repair", action="append", choices=KINDS.values, default=[], metavar="CLASS",
                            help=f"A class to repair (repeatable): {', '.join(KINDS.values)}.")
        parser.add_argument("--apply", action="store_true", help="Queue the repair instead of only showing it.")
        parser.add_argument("--show", type=int, default=20, help="Rows to print per class (default 20).")
        add_wait_arguments(parser, "repair")
        add_background_arguments(parser, "reconciliation (and the repair)")

    def handle(self, *args: Any, **options: Any) -> None:
        prefix = Prefix.objects.filter(prefix__iexact=options["prefix"]).first()
        if prefix is None:
            raise CommandError(f"The prefix {options['prefix']} is not configured here.")
        background = options["background"]
        run = services.reconciliation_start(prefix=prefix, via="command", enqueue=background)
        if background:
            self.stdout.write(f"{run} queued; a worker (manage.py qcluster) runs it in slices.")
            if not options["wait"] and not options["repair"]:
                return
            run = wait_for_job(self, "reconcile", run.pk, timeout=options["timeout"])  # a repair follows its end
        else:
            verbose = options["verbosity"] > 1
            run = reconcile.run(run.pk, on_progress=(lambda done, total, message: self.stdout.write(
                f"  {message}: {done:,} of {total:,}")) if verbose else None)
        if run.state != JobState.DONE:
            report_end(self, run)
        counts = run.counts
        self.stdout.write(f"Reconciliation #{run.pk} of {prefix.prefix}: {counts.get('listed', 0):,} listed on the "
                          f"server, {counts.get('in_sync', 0):,} in sync"
                          + (f", {counts['vendor']:,} from the vendor's sequence" if counts.get("vendor") else ""))
        for kind, label in KINDS.choices:
            if counts.get(kind):
                self.stdout.write(f"{label}: {counts[kind]:,}")
                for row in run.rows.filter(kind=kind).order_by("pk")[:options["show"]]:
                    vendor = " [vendor]" if row.vendor else ""
                    self.stdout.write(f"  {row.full_handle}{vendor}: server {row.server_url or '-'}; ours "
                                      f"{row.our_url or '-'}" + (f" ({row.note})" if row.note else ""))
        if options["repair"]:
            self._repair(run, options["repair"], options["apply"], options)

    def _repair(self, run: ReconciliationRun, kinds: list[str], apply: bool, options: dict[str, Any]) -> None:
        plan = selectors.repair_plan(run, kinds=kinds)
        if not plan.total:
            self.stdout.write("Nothing to repair in these classes.")
            return
        for label, action, count in plan.lines():
            self.stdout.write(f"Repair {label.lower()}: {action.lower()} ({count:,})")
        if not apply:
            self.stdout.write("Dry run: nothing was queued. Add --apply to queue these repairs.")
            return
        background = options["background"]
        try:
            job = services.repair_start(run=run, kinds=kinds, via="command", enqueue=background)
        except HandleServiceError as exc:
            raise CommandError(exc.message) from None
        if background:
            self.stdout.write(f"{job} queued; a worker (manage.py qcluster) queues each repair and verifies it.")
            if options["wait"]:
                report_end(self, wait_for_job(self, "repair", job.pk, timeout=options["timeout"]))
            return
        job = services.repair_execute(job.pk)
        if job.state == JobState.FAILED:
            raise CommandError(job.error)
        done = ", ".join(f"{op} {n:,}" for op, n in sorted(job.counts.items()))
        self.stdout.write(self.style.SUCCESS(f"Repair #{job.pk} queued: {done}. The worker (qcluster) pushes each and "
                                             "verifies it on the server."))
        if options["wait"]:
            job = wait_until_settled(self, job, reload=RepairJob.objects.get, settle=services.repair_job_settle,
                                     timeout=options["timeout"])
        if job.finished:
            report_settled(self, job)
        else:
            self.stdout.write(f"{job} is {job.get_state_display().lower()}; add --wait to wait for the server's "
                              "confirmation of each repair.")
